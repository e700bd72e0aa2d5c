"""One journal record per fact, read from the whole journal of a real contained systemd: the
hook's stdout is the hooked unit's journal stream, so a table row there would be a second
entry of each removal (issue 21.2). Filtering on IPCJANITOR_UNIT= would miss it."""

from __future__ import annotations

import pytest

from .conftest import journal, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

REMOVED = "3b1f8f6a4d2c4e7f9a0b5c6d7e8f9012"


def test_each_removal_of_the_hook_is_in_the_journal_once(box: Container) -> None:
    box.run("ipcjanitor install-hook leaky.service")
    box.run("systemctl start leaky.service")
    box.wait_until(
        "test $(wc -l < /proc/sysvipc/shm) -ge 2 && test $(wc -l < /proc/sysvipc/sem) -ge 2"
    )
    main_pid = int(box.run("systemctl show -p MainPID --value leaky.service").stdout)
    key = f"0x{0x61040000 | (main_pid & 0xFFFF):08x}"
    box.run("systemctl kill -s KILL leaky.service")
    box.wait_until("test $(systemctl show -p ActiveState --value leaky.service) = failed")
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    # the hook has exited; its stdout stream's last lines reach journald after its records
    box.wait_until(
        f"test $(journalctl --no-pager IPCJANITOR_UNIT=leaky.service | grep -c {key}) -ge 2",
        timeout=15,
    )
    box.run("journalctl --sync")
    every = journal(box)  # the whole journal: the unit's stream, the records, systemd's own
    hook_lines = [e for e in every if e.get("_SYSTEMD_UNIT") == "leaky.service"
                  or e.get("OBJECT_SYSTEMD_UNIT") == "leaky.service"]  # fmt: skip
    assert hook_lines, "the hook's invocation left nothing in the journal"
    naming = [e for e in every if key in str(e.get("MESSAGE", ""))]
    said = [(e.get("_TRANSPORT"), e.get("MESSAGE")) for e in naming]
    # before the fix: also each table row, from the hook's stdout stream (_TRANSPORT=stdout)
    assert sorted(str(e.get("IPCJANITOR_KIND")) for e in naming) == ["sem", "shm"], said
    assert all(e.get("MESSAGE_ID") == REMOVED for e in naming)
    # the hook's stdout still says the rest: its summary, in the unit's stream
    streamed = [str(e.get("MESSAGE")) for e in hook_lines if e.get("_TRANSPORT") == "stdout"
                and e.get("SYSLOG_IDENTIFIER") == "ipcjanitor-hook"]  # fmt: skip
    assert streamed.count("2 objects: 2 removed") == 1, streamed

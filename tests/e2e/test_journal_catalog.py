"""The journal catalog under a real systemd: `journalctl -x` explains a hooked SIGKILL's removal
records, and `journalctl -p err` shows the reason of a root's manual clean's policy error."""

from __future__ import annotations

import re

import pytest

from .conftest import journal, sysvipc_keys
from .container import ROOT, Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


def install_catalog(box: Container) -> None:
    """As the packages do: the file in /usr/lib/systemd/catalog/, then --update-catalog."""
    box.write("/usr/lib/systemd/catalog/ipcjanitor.catalog",
              (ROOT / "packaging" / "ipcjanitor.catalog").read_text())  # fmt: skip
    box.run("journalctl --update-catalog")


def test_journalctl_x_explains_the_hooks_removals(box: Container) -> None:
    install_catalog(box)
    box.run("ipcjanitor install-hook leaky.service")
    box.run("systemctl start leaky.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    box.run("systemctl kill -s KILL leaky.service")
    box.wait_until("test $(systemctl show -p ActiveState --value leaky.service) = failed")
    assert sysvipc_keys(box, "shm") == []
    box.wait_until(
        "test $(journalctl --no-pager -o cat IPCJANITOR_UNIT=leaky.service | wc -l) -ge 2",
        timeout=15,
    )
    shown = box.run("journalctl --no-pager -x IPCJANITOR_UNIT=leaky.service IPCJANITOR_KIND=shm")
    # the catalog's lines, each after journalctl's "░░ ", read as one text
    text = " ".join(line.removeprefix("░░ ").strip() for line in shown.stdout.splitlines())
    assert "Subject: A stale shm object of owner leaky was removed" in text, text
    assert "Defined-By: ipcjanitor" in text and "Documentation: man:ipcjanitor(8)" in text
    # the explanation carries the record's own reason
    assert re.search(
        r"after proving nobody used it any more: [^.]*pid \d+ exited; nothing attached",
        text), text  # fmt: skip


def test_journalctl_p_err_shows_a_manual_cleans_policy_error(box: Container) -> None:
    install_catalog(box)
    box.write("/etc/ipcjanitor/policy.d/zz-broken.toml", "[owners.x]\nkeys = ['0x20-0x10']\n")
    # root, by hand, outside any unit: still an audit trail in the journal
    failed = box.run("ipcjanitor clean", check=False)
    assert failed.returncode == 78, failed.stderr
    assert "range '0x20-0x10' is reversed" in failed.stderr  # and said where it was typed
    box.wait_until("journalctl --no-pager -p err -t ipcjanitor | grep -q 'is reversed'", timeout=15)
    (record,) = journal(box, "-p", "err", "-t", "ipcjanitor")
    assert record["MESSAGE_ID"] == "5f921bd1851b4b24b07eb9ff4aad9847"
    assert record["PRIORITY"] == "3"
    assert "zz-broken.toml:2: [owners.x] keys: range '0x20-0x10' is reversed" in str(
        record["MESSAGE"]
    )
    shown = box.run("journalctl --no-pager -x -p err -t ipcjanitor").stdout
    explained = " ".join(line.removeprefix("░░ ").strip() for line in shown.splitlines())
    assert "Subject: The IPC janitor's policy has an error: nothing was removed" in explained
    assert "`ipcjanitor policy check` shows the same errors" in explained

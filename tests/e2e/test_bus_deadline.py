"""A bus that never answers (issue 16, item 7): a SIGSTOPped dbus-daemon made the hook
block ~90 s in sd-bus, and every hooked stop ended `Result=timeout`, nothing cleaned."""

from __future__ import annotations

import time

import pytest

from .conftest import journal, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


def test_a_stalled_dbus_daemon_neither_fails_the_stop_nor_stops_the_clean(box: Container) -> None:
    box.run("ipcjanitor install-hook leaky.service")
    # a short stop timeout, so that the old hook's wait shows as `timeout` in seconds
    box.write("/etc/systemd/system/leaky.service.d/timeout.conf", "[Service]\nTimeoutStopSec=20s\n")
    box.run("systemctl daemon-reload && systemctl start leaky.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    bus = box.run("systemctl show -p MainPID --value dbus.service").stdout.strip()
    assert bus not in ("", "0"), "dbus.service is not running in the container"
    box.run(f"kill -STOP {bus}")
    try:
        started = time.monotonic()
        box.run("systemctl kill -s KILL leaky.service")  # root's systemctl: PID 1's own socket
        box.wait_until(
            "test $(systemctl show -p ActiveState --value leaky.service) = failed", timeout=60
        )
        took = time.monotonic() - started
        result = box.run("systemctl show -p Result --value leaky.service").stdout.strip()
        assert result == "signal", result  # not `timeout`
        assert took < 15, took
        assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
        records = journal(box, "IPCJANITOR_UNIT=leaky.service")
        assert sorted(str(r["IPCJANITOR_VERDICT"]) for r in records) == ["removed", "removed"]
        notes = [str(r["MESSAGE"]) for r in journal(box, "-u", "leaky.service")]
        assert any("systemd is not asked" in n for n in notes), notes  # issue 20
    finally:
        box.run(f"kill -CONT {bus}")

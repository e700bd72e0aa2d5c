"""A hooked stop is never stalled past TimeoutStopSec= by the run lock (issue 16.6).

Under the contained real systemd: nobody cannot take root's lock at all, and while another
root run holds it for longer than a stop may take, the hook gives up cleanly — the stop
succeeds, one journal record says why, and the next run judges the objects.
"""

from __future__ import annotations

import time

import pytest

from .conftest import VENV_BIN, journal, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

POLICY = """\
[owners.locked]
unit = "locked.service"
keys = ["0x61070000-0x6107ffff"]
min_age = "0s"
"""
MAKER = """\
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
key = 0x61070000 | (os.getpid() & 0xFFFF)
assert libc.shmget(key, 4096, 0o1600) >= 0
while True:
    time.sleep(60)
"""
# shorter than the hook's old 120 s wait, longer than its 5 s budget
SERVICE = """\
[Service]
User=nobody
TimeoutStopSec=15s
ExecStart=/usr/bin/python3 /usr/local/bin/locked-maker
"""
NOBODY_TRIES = (
    "setpriv --reuid=65534 --regid=65534 --clear-groups python3 -c "
    "'import fcntl, glob, os, sys\n"
    'names = glob.glob("/run/ipcjanitor/*.lock") + sys.argv[1:]\n'
    "for n in names:\n"
    "    try:\n"
    "        fcntl.flock(os.open(n, os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    '        print("HELD", n)\n'
    "    except OSError as e:\n"
    '        print("refused", n, e.strerror)\n\' '
)
HOLD = "from ipcjanitor.engine.lock import acquire; h = acquire(); import time; time.sleep(600)"


def test_a_hooked_stop_behind_a_long_root_run_gives_up_inside_its_timeout(box: Container) -> None:
    box.write("/etc/ipcjanitor/policy.d/locked.toml", POLICY)
    box.write("/usr/local/bin/locked-maker", MAKER, 0o755)
    box.write("/etc/systemd/system/locked.service", SERVICE)
    box.run("systemctl daemon-reload && ipcjanitor install-hook locked.service")
    box.run("systemctl start locked.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    (key,) = sysvipc_keys(box, "shm")

    box.run(f"systemd-run --unit=long-run.service {VENV_BIN / 'python'} -c '{HOLD}'")
    box.wait_until('test -n "$(fuser /run/ipcjanitor/*.lock 2>/dev/null)"')
    start = time.monotonic()
    box.run("systemctl stop locked.service", timeout=60)
    took = time.monotonic() - start
    result = box.run("systemctl show -p Result --value locked.service").stdout.strip()
    # before: the hook waited 120 s for the lock, and the stop ended Result=timeout at 15 s
    assert result == "success" and 4.5 < took < 14, (result, took)
    records = journal(box, "IPCJANITOR_UNIT=locked.service")
    assert len(records) == 1, records
    said = str(records[0]["MESSAGE"])
    assert "gave up after locked.service stopped, nothing was removed" in said, said
    assert records[0]["PRIORITY"] == "4" and records[0]["IPCJANITOR_OWNER"] == "locked"
    assert sysvipc_keys(box, "shm") == [key]  # kept for the next run, which removes it

    box.run("systemctl stop long-run.service")
    box.run("ipcjanitor clean")
    assert sysvipc_keys(box, "shm") == []

    # and no user can be that long run: nobody cannot even open root's lock
    lock = box.run("ls /run/ipcjanitor/*.lock").stdout.strip()
    tried = box.run(NOBODY_TRIES + lock).stdout
    assert "HELD" not in tried and f"refused {lock} Permission denied" in tried, tried


def test_the_hooks_metrics_say_it_gave_up(box: Container) -> None:
    """Exit 0 for systemd, but its metrics file says the hook gave up and cleaned nothing:
    the last success does not move (issue 21.1; the alert: packaging/prometheus)."""
    box.write("/etc/ipcjanitor/policy.d/locked.toml", POLICY)
    box.write("/usr/local/bin/locked-maker", MAKER, 0o755)
    box.write("/etc/systemd/system/locked.service", SERVICE)
    box.run("mkdir -m 0755 -p /var/lib/textfile")
    box.run("systemctl daemon-reload && ipcjanitor install-hook "
            "--metrics /var/lib/textfile/hook-%n.prom locked.service")  # fmt: skip
    box.run("systemctl start locked.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    box.run(f"systemd-run --unit=long-run.service {VENV_BIN / 'python'} -c '{HOLD}'")
    box.wait_until('test -n "$(fuser /run/ipcjanitor/*.lock 2>/dev/null)"')
    box.run("systemctl stop locked.service", timeout=60)
    assert box.run("systemctl show -p Result --value locked.service").stdout.strip() == "success"
    text = box.run("cat /var/lib/textfile/hook-locked.service.prom").stdout
    labels = '{source="hook",unit="locked.service"}'
    assert f"ipcjanitor_last_run_exit_code{labels} 0.0\n" in text, text
    assert f"ipcjanitor_last_run_gave_up{labels} 1.0\n" in text, text
    assert f"ipcjanitor_gave_up_total{labels} 1.0\n" in text, text
    assert f"ipcjanitor_last_success_timestamp_seconds{labels} 0.0\n" in text, text
    box.run("systemctl stop long-run.service")

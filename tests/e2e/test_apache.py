"""Apache httpd's `Mutex sysvsem` sets under a real systemd: SIGKILLed restarts fill the
semaphore table (AH00023) without the hook, and never with it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import journal
from .container import ROOT, Container, available
from .test_learn import APACHE_SETUP

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.skipif(
        not os.path.exists("/usr/sbin/apache2"), reason="needs apache2 (make setup-test)"
    ),
]

EXAMPLE = ROOT / "packaging" / "examples" / "apache-mutex-sysvsem.toml"
# Each start of prefork + mod_ssl with `Mutex sysvsem default` makes two sets (mpm-accept,
# ssl-cache): a table of 6 holds three starts' worth.
SEMMNI = 6
SETS_PER_START = 2


def _sets(c: Container) -> list[tuple[int, int, int, int]]:
    """(key, semid, uid, cuid) of every semaphore set in the container's IPC namespace."""
    rows = c.run("cat /proc/sysvipc/sem").stdout.splitlines()[1:]
    return [(int(r[0]), int(r[1]), int(r[4]), int(r[6])) for r in (line.split() for line in rows)]


def _show(c: Container, *props: str) -> dict[str, str]:
    out = c.run(f"systemctl show -p {','.join(props)} apache2.service").stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def _kill(c: Container) -> dict[str, str]:
    """SIGKILL every process of apache2.service; wait until systemd has restarted it (Debian's
    Restart=on-abort) or given up, and say which."""
    before = _show(c, "NRestarts", "MainPID")
    c.run("systemctl kill -s KILL apache2.service")
    c.wait_until(
        f"test $(systemctl show -p NRestarts --value apache2.service) -gt {before['NRestarts']}"
    )
    c.wait_until(
        "s=$(systemctl show -p ActiveState,SubState --value apache2.service | tr '\\n' ' '); "
        "test \"$s\" = 'active running ' -o \"$s\" = 'failed failed '"
    )
    after = _show(c, "ActiveState", "NRestarts", "MainPID", "Result")
    if after["ActiveState"] == "active":
        assert after["MainPID"] != before["MainPID"]
        c.wait_until(f"test $(grep -c ' 33 *33 *0 *0 ' /proc/sysvipc/sem) -ge {SETS_PER_START}")
    return after


def _ah00023(c: Container) -> list[str]:
    log = c.run("journalctl --no-pager -o cat -u apache2.service").stdout
    return [line for line in log.splitlines() if "AH00023" in line]


def test_killed_apache_never_fills_the_semaphore_table_with_the_hook(box: Container) -> None:
    host_sem = Path("/proc/sys/kernel/sem").read_text()
    box.write("/etc/apache2/conf-enabled/zz-ipcjanitor-test.conf", "Mutex sysvsem default\n")
    # its own network namespace (ports 80/443 are not ours); StartLimitIntervalSec=0: the
    # test restarts it more often than systemd's default 5 starts in 10 s allows
    box.write(
        "/etc/systemd/system/apache2.service.d/net.conf",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nPrivateNetwork=yes\n",
    )
    for command in APACHE_SETUP:
        box.run(command)
    # the policy, as shipped: uid www-data, private, kinds sem, no cuid
    box.write("/etc/ipcjanitor/policy.d/apache.toml", EXAMPLE.read_text())
    # kernel.sem is per IPC namespace: this is the container's table, not the host's
    box.run(f"echo '250 32000 32 {SEMMNI}' > /proc/sys/kernel/sem")
    assert box.run("cat /proc/sys/kernel/sem").stdout.split()[3] == str(SEMMNI)
    assert Path("/proc/sys/kernel/sem").read_text() == host_sem

    box.run("systemctl start apache2.service")
    box.wait_until(f"test $(grep -c ' 33 *33 *0 *0 ' /proc/sysvipc/sem) -ge {SETS_PER_START}")
    first = _sets(box)
    # IPC_PRIVATE, owner www-data (33), created by root (0): the case
    assert [(key, uid, cuid) for key, _, uid, cuid in first] == [(0, 33, 0)] * SETS_PER_START

    # while it runs, `clean` keeps every set, and says why
    box.run("ipcjanitor clean")
    assert _sets(box) == first
    doc = json.loads(box.run("ipcjanitor scan --json --owner apache").stdout)
    assert {(o["id"], o["verdict"]) for o in doc["objects"]} == {
        (semid, "in-use") for _, semid, _, _ in first
    }
    assert {o["reason"] for o in doc["objects"]} == {
        "apache2.service is running: it may attach by key again at any moment"
    }

    # with the hook: every SIGKILL is followed by a restart, and the dead sets go first
    box.run("ipcjanitor install-hook apache2.service")
    dead: set[int] = set()
    for kill in range(1, SEMMNI + 1):  # twice as many kills as the table holds starts
        now = {semid for _, semid, _, _ in _sets(box)}
        state = _kill(box)
        assert (state["ActiveState"], state["NRestarts"]) == ("active", str(kill))
        dead |= now
        assert len(_sets(box)) == SETS_PER_START
        assert not dead & {semid for _, semid, _, _ in _sets(box)}
    removed = journal(box, "IPCJANITOR_UNIT=apache2.service")
    assert {int(str(r["IPCJANITOR_ID"])) for r in removed} == dead
    assert {(r["IPCJANITOR_VERDICT"], r["IPCJANITOR_OWNER"]) for r in removed} == {
        ("removed", "apache")
    }
    assert _ah00023(box) == []

    # without it: the same kills leave every set behind, and the third restart finds the
    # table full
    box.run("ipcjanitor install-hook --remove apache2.service")
    for kill in range(1, SEMMNI // SETS_PER_START + 1):
        state = _kill(box)
        if kill < SEMMNI // SETS_PER_START:
            assert state["ActiveState"] == "active"
            assert len(_sets(box)) == SETS_PER_START * (kill + 1)
    assert (state["ActiveState"], state["Result"]) == ("failed", "exit-code")
    assert len(_sets(box)) == SEMMNI
    (failure,) = [line for line in _ah00023(box) if "mpm-accept" in line]
    assert "No space left on device" in failure

    # the timer's `clean` frees them: the service is stopped and every pid is dead
    box.run("ipcjanitor clean")
    assert _sets(box) == []
    box.run("systemctl start apache2.service")
    assert _show(box, "ActiveState")["ActiveState"] == "active"
    box.run("systemctl stop apache2.service")

"""End to end under a real systemd (PID 1 of private namespaces), real D-Bus, real journald."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from .conftest import journal, sysvipc_keys
from .container import ROOT, Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


def test_install_hook_writes_an_idempotent_drop_in(box: Container) -> None:
    first = box.run("ipcjanitor install-hook leaky.service")
    assert (
        "wrote /etc/systemd/system/leaky.service.d/ipcjanitor.conf; systemd reloaded"
        in first.stdout
    )
    text = box.run("cat /etc/systemd/system/leaky.service.d/ipcjanitor.conf").stdout
    assert box.run("sha256sum -c /var/lib/ipcjanitor/dropins").stdout.endswith(
        "ipcjanitor.conf: OK\n"
    )
    trampoline = ROOT / "ipcjanitor" / "ipcjanitor-hook"
    assert f"ExecStopPost=-+{trampoline} /usr/bin/ipcjanitor hook --unit=%n\n" in text
    # `leaky` is leaky.service, as systemctl reads it
    assert "already installed: nothing changed" in box.run("ipcjanitor install-hook leaky").stdout
    # systemd took the drop-in: ExecStopPost is now part of the unit
    shown = box.run("systemctl show -p ExecStopPost leaky.service").stdout
    assert "/usr/bin/ipcjanitor" in shown and "hook" in shown
    refused = box.run("ipcjanitor install-hook nobody.service", check=False)
    assert refused.returncode == 78 and 'add unit = "nobody.service"' in refused.stderr
    box.run("ipcjanitor install-hook --runtime leaky.service")
    assert (
        box.run(
            "test -f /run/systemd/system/leaky.service.d/ipcjanitor.conf", check=False
        ).returncode
        == 0
    )
    removed = box.run("ipcjanitor install-hook --remove leaky.service").stdout
    assert removed.startswith("removed /etc/systemd/system/leaky.service.d/ipcjanitor.conf")
    # the list a purge of the package reads: what install-hook wrote, and only what is left
    listed = box.run("cat /var/lib/ipcjanitor/dropins").stdout.splitlines()
    digest = box.run("sha256sum /run/systemd/system/leaky.service.d/ipcjanitor.conf").stdout
    assert listed == [digest.strip()]


def test_hook_removes_what_a_sigkilled_service_left(box: Container) -> None:
    box.run("ipcjanitor install-hook leaky.service")
    box.run("systemctl start leaky.service")
    box.wait_until(
        "test $(wc -l < /proc/sysvipc/shm) -ge 2 && test $(wc -l < /proc/sysvipc/sem) -ge 2"
    )
    main_pid = int(box.run("systemctl show -p MainPID --value leaky.service").stdout)
    key = 0x61040000 | (main_pid & 0xFFFF)
    assert sysvipc_keys(box, "shm") == [key] and sysvipc_keys(box, "sem") == [key]
    box.run("systemctl kill -s KILL leaky.service")
    box.wait_until("test $(systemctl show -p ActiveState --value leaky.service) = failed")
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    assert box.run("systemctl show -p Result --value leaky.service").stdout.strip() == "signal"
    records = journal(box, "IPCJANITOR_UNIT=leaky.service")
    assert sorted(str(r["IPCJANITOR_KIND"]) for r in records) == ["sem", "shm"]
    for r in records:
        assert r["IPCJANITOR_VERDICT"] == "removed"
        assert r["IPCJANITOR_KEY"] == f"0x{key:08x}"
        assert r["IPCJANITOR_OWNER"] == "leaky"
        assert r["MESSAGE_ID"] == "3b1f8f6a4d2c4e7f9a0b5c6d7e8f9012"
        # decided from the unit's own cgroup; systemd is not asked (issue 20)
        assert f"pid {main_pid} exited" in str(r["IPCJANITOR_REASON"])
        assert str(main_pid) in str(r["IPCJANITOR_PIDS"])


def test_a_clean_stop_with_a_broken_policy_stays_clean_and_logs_loudly(box: Container) -> None:
    box.run("ipcjanitor install-hook leaky.service")
    box.run("systemctl start leaky.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    box.write("/etc/ipcjanitor/policy.d/zz-broken.toml", "[owners.x]\nkeys = ['0x20-0x10']\n")
    box.run("systemctl stop leaky.service")
    assert (
        box.run("systemctl show -p ActiveState --value leaky.service").stdout.strip() == "inactive"
    )
    # journald may index the hook's record a moment after the stop returns (seen under load)
    box.wait_until(
        "journalctl --no-pager -u leaky.service -p err | grep -q 'policy error, nothing was removed'",
        timeout=15,
    )
    errors = journal(box, "-u", "leaky.service", "-p", "err")
    assert any("policy error, nothing was removed" in str(r["MESSAGE"]) for r in errors)
    assert len(sysvipc_keys(box, "shm")) == 1  # a policy error removes nothing


def test_hook_without_a_bus_still_cleans_from_the_policy(box: Container) -> None:
    box.run("systemctl start leaky.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    box.run("systemctl kill -s KILL leaky.service")
    box.wait_until("test $(systemctl show -p ActiveState --value leaky.service) = failed")
    out = box.run(
        "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent ipcjanitor hook --unit leaky.service --json"
    ).stdout
    doc = json.loads(out)
    assert [o["verdict"] for o in doc["objects"]] == ["removed", "removed"]
    assert any("systemd is not asked" in n for n in doc["summary"]["notes"])


def test_the_oneshot_service_cleans_a_stale_owner_without_unit(box: Container) -> None:
    box.run(
        "/usr/bin/python3 -c 'import ctypes, os; libc = ctypes.CDLL(None); libc.shmat.restype = ctypes.c_void_p;"
        " libc.shmat(libc.shmget(0x70000001, 4096, 0o1600), None, 0); os.kill(os.getpid(), 9)'",
        check=False,
    )
    assert sysvipc_keys(box, "shm") == [0x70000001]
    box.run("systemctl start ipcjanitor.service")
    assert sysvipc_keys(box, "shm") == []
    assert (
        box.run("systemctl show -p Result --value ipcjanitor.service").stdout.strip() == "success"
    )
    (record,) = journal(box, "_SYSTEMD_UNIT=ipcjanitor.service", "IPCJANITOR_VERDICT=removed")
    assert record["IPCJANITOR_OWNER"] == "orphans" and record["IPCJANITOR_KEY"] == "0x70000001"


def test_the_timer_is_enabled_and_the_units_verify(box: Container) -> None:
    box.run("systemctl enable --now ipcjanitor.timer")
    assert "ipcjanitor.timer" in box.run("systemctl list-timers --all --no-legend").stdout
    assert box.run("systemctl is-enabled ipcjanitor.timer").stdout.strip() == "enabled"
    verify = box.run(
        "systemd-analyze verify /etc/systemd/system/ipcjanitor.service "
        "/etc/systemd/system/ipcjanitor.timer 2>&1"
    )
    assert verify.stdout.strip() == ""


PHP_WORKER = """<?php
// The first incident: a worker with per-process keys, never cleaning up on SIGKILL.
$key = 0x61050000 | (getmypid() & 0xffff);
$shm = shm_attach($key, 1024, 0600);
if ($shm === false) { fwrite(STDERR, "worker: shm_attach failed\\n"); exit(3); }
$sem = sem_get($key, 1, 0600);
sem_acquire($sem);
shm_put_var($shm, 1, "hello from " . getmypid());
sem_release($sem);
file_put_contents("/run/php-worker.ok", getmypid() . "\\n", FILE_APPEND);
while (true) { sleep(60); }
"""


@pytest.mark.skipif(shutil.which("php") is None, reason="needs php-cli (apt-get install php-cli)")
def test_php_incident_table_fills_without_hook_and_never_with_it(box: Container) -> None:
    box.write("/srv/php/worker.php", PHP_WORKER)
    box.write(
        "/etc/systemd/system/php-worker.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/usr/bin/php /srv/php/worker.php\n",
    )
    box.write(
        "/etc/ipcjanitor/policy.d/php.toml",
        '[owners.php]\nunit = "php-worker.service"\nkeys = ["0x61050000-0x6105ffff"]\nmin_age = "0s"\n',
    )
    box.run("systemctl daemon-reload && sysctl -q -w kernel.shmmni=6")

    def one_life() -> bool:
        """Start the worker, let it attach, SIGKILL it. False when it could not start."""
        before = box.run("cat /run/php-worker.ok 2>/dev/null | wc -l").stdout.strip()
        box.run("systemctl start php-worker.service", check=False)  # fails once the table is full
        box.wait_until(
            f"test $(cat /run/php-worker.ok 2>/dev/null | wc -l) -gt {before} || "
            "test $(systemctl show -p ActiveState --value php-worker.service) = failed"
        )
        ok = (
            box.run("systemctl show -p ActiveState --value php-worker.service").stdout.strip()
            == "active"
        )
        if ok:
            box.run("systemctl kill -s KILL php-worker.service")
        box.wait_until("test $(systemctl show -p ActiveState --value php-worker.service) = failed")
        return ok

    lives = [one_life() for _ in range(8)]
    worked = lives.index(False)  # every SIGKILL leaked a segment until the table (6) was full
    assert worked >= 3 and lives[worked:] == [False] * (8 - worked), lives
    # the worker's own words, from its stdout stream in the journal
    box.wait_until(
        "journalctl --no-pager | grep 'shm_attach(): Failed for key 0x6105' | grep -q 'No space left on device'"
    )
    leaked = [k for k in sysvipc_keys(box, "shm") if k >> 16 == 0x6105]
    assert len(leaked) == worked == 6

    box.run("ipcjanitor clean")  # what the timer would do: the unit is stopped, all are stale
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    box.run("ipcjanitor install-hook php-worker.service")
    assert all(one_life() for _ in range(10))
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    removed = journal(box, "IPCJANITOR_UNIT=php-worker.service", "IPCJANITOR_VERDICT=removed")
    assert len(removed) == 20  # a segment and a semaphore set after each of the 10 kills


def test_the_hardened_service_sees_other_users_and_removes_only_the_dead(box: Container) -> None:
    holder = (
        "import ctypes, time; libc = ctypes.CDLL(None);"
        " assert libc.shmget(0x70000010, 4096, 0o1644) >= 0; time.sleep(600)"
    )
    box.run("useradd -M -u 4242 holder")  # in the container's /etc overlay
    box.run(f"systemd-run --uid=holder --unit=holder.service /usr/bin/python3 -c '{holder}'")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    box.run(
        "setpriv --reuid=4343 --regid=4343 --clear-groups /usr/bin/python3 -c 'import ctypes, os;"
        " libc = ctypes.CDLL(None); libc.shmat.restype = ctypes.c_void_p;"
        " libc.shmat(libc.shmget(0x70000011, 4096, 0o1600), None, 0); os.kill(os.getpid(), 9)'",
        check=False,
    )
    assert sorted(sysvipc_keys(box, "shm")) == [0x70000010, 0x70000011]
    box.run("systemctl start ipcjanitor.service")
    assert sysvipc_keys(box, "shm") == [0x70000010]  # the live uid-4242 creator's is kept
    (record,) = journal(box, "_SYSTEMD_UNIT=ipcjanitor.service", "IPCJANITOR_VERDICT=removed")
    assert record["IPCJANITOR_KEY"] == "0x70000011" and record["IPCJANITOR_UID"] == "4343"
    box.run("systemctl stop holder.service")


SUPERVISOR = """\
import os, signal, time
r, w = os.pipe()
if os.fork() == 0:  # the child: stdout is a pipe whose read end only it holds
    os.dup2(w, 1)
    os.close(w)
    while True:
        os.write(1, b"x" * 4096)
os.close(w)
os.close(r)
while True:
    time.sleep(60)
"""


def test_doctor_finds_the_supervisord_leak_with_its_unit(box: Container) -> None:
    box.write("/usr/local/bin/supervisor", SUPERVISOR, 0o755)
    box.write(
        "/etc/systemd/system/supervisor.service",
        "[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/supervisor\nKillMode=process\n",
    )
    box.run("systemctl daemon-reload && systemctl start supervisor.service")
    main = int(box.run("systemctl show -p MainPID --value supervisor.service").stdout)

    def doctor() -> Any:
        out = box.run("ipcjanitor doctor --json", check=False)
        assert out.returncode in (0, 1), out.stderr
        return json.loads(out.stdout)

    box.wait_until("ipcjanitor doctor --json | grep -q '\"holds_read_end\": true'")
    (stuck,) = doctor()["stuck_pipes"]
    assert stuck["unit"] == "supervisor.service" and stuck["pid"] != main
    assert stuck["holds_read_end"] is True and stuck["fds"][0] == 1
    assert stuck["orphaned"] is False  # its parent, the supervisor, still runs
    box.run("systemctl kill -s KILL --kill-who=main supervisor.service")  # the supervisor dies
    box.wait_until("ipcjanitor doctor --json | grep -q '\"orphaned\": true'")
    report = doctor()
    (stuck,) = report["stuck_pipes"]
    assert stuck["unit"] == "supervisor.service" and stuck["orphaned"] is True
    assert report["healthy"] is False
    box.run(f"kill -9 {stuck['pid']}")

"""The installed hook runs as root with the hooked service's Environment=: nothing in it counts.

A `User=nobody` service points PYTHONPATH, LD_PRELOAD, IPCJANITOR_POLICY and
IPCJANITOR_LOCK_DIR (and PATH, HOME, TMPDIR) at files nobody may write, is SIGKILLed, and the
real hook installed by `install-hook` must still remove its objects without loading or
writing any of them.
"""

from __future__ import annotations

import pytest

from .conftest import journal, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

HOSTILE = "/run/hostile"  # the container's own tmpfs; owned by nobody, like a service's state

# Each marker is named by the effective uid that ran the hostile code: the service itself
# (65534) proves the hostile environment works; uid 0 would be the hook running it as root.
PRELOAD_C = f"""\
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {{
    char path[128];
    snprintf(path, sizeof path, "{HOSTILE}/marks/preload.%d", (int)geteuid());
    FILE *f = fopen(path, "a");
    if (f) fclose(f);
}}
"""
PYTHONPATH_INIT = f"""\
import os
open(f"{HOSTILE}/marks/pythonpath.{{os.geteuid()}}", "a").close()
"""
# owns nothing for the unit: honoured, the hook would remove nothing (as root it would also
# refuse a policy nobody can write, which removes nothing too)
HOSTILE_POLICY = """\
[owners.decoy]
keys = ["0x7ff00000"]
"""
POLICY = """\
[owners.hostile]
unit = "hostile.service"
keys = ["0x61060000-0x6106ffff"]
min_age = "0s"
"""
MAKER = """\
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
key = 0x61060000 | (os.getpid() & 0xFFFF)
shm = libc.shmget(key, 4096, 0o1600)
assert shm >= 0 and libc.shmat(shm, None, 0) not in (None, ctypes.c_void_p(-1).value)
sem = libc.semget(key, 1, 0o1600)
op = (ctypes.c_short * 3)(0, 1, 0)
assert sem >= 0 and libc.semop(sem, op, 1) == 0
print("ready", key, flush=True)
while True:
    time.sleep(60)
"""
SERVICE = f"""\
[Service]
User=nobody
Environment=PYTHONPATH={HOSTILE}/py
Environment=LD_PRELOAD={HOSTILE}/evil.so
Environment=IPCJANITOR_POLICY={HOSTILE}/policy.toml
Environment=IPCJANITOR_LOCK_DIR={HOSTILE}/lock
Environment=PATH={HOSTILE}/bin:/usr/bin:/bin
Environment=HOME={HOSTILE} TMPDIR={HOSTILE}/tmp
# as nobody, with the same environment: the hostile package and preload do run
ExecStartPre=/usr/bin/python3 -c "import ipcjanitor"
ExecStart=/usr/bin/python3 /usr/local/bin/maker
"""


def plant(c: Container) -> None:
    for d in ("py/ipcjanitor", "marks", "lock", "bin", "tmp"):
        c.run(f"mkdir -p {HOSTILE}/{d}")
    c.write(f"{HOSTILE}/py/ipcjanitor/__init__.py", PYTHONPATH_INIT)
    c.write(f"{HOSTILE}/policy.toml", HOSTILE_POLICY)
    c.write(f"{HOSTILE}/evil.c", PRELOAD_C)
    c.run(f"gcc -shared -fPIC -o {HOSTILE}/evil.so {HOSTILE}/evil.c")
    for tool in ("python3", "ipcjanitor", "env", "sh"):  # whatever a PATH lookup might find
        c.write(f"{HOSTILE}/bin/{tool}", f"#!/bin/sh\ntouch {HOSTILE}/marks/path.$(id -u)\n", 0o755)
    c.run(f"chown -R nobody:nogroup {HOSTILE} && chmod -R a+rwX {HOSTILE}")
    c.write("/usr/local/bin/maker", MAKER, 0o755)
    c.write("/etc/ipcjanitor/policy.d/hostile.toml", POLICY)
    c.write("/etc/systemd/system/hostile.service", SERVICE)
    c.run("systemctl daemon-reload")


def test_the_hook_ignores_a_hostile_service_environment(box: Container) -> None:
    plant(box)
    box.run("ipcjanitor install-hook hostile.service")
    box.run("systemctl start hostile.service")
    box.wait_until(
        "test $(wc -l < /proc/sysvipc/shm) -ge 2 && test $(wc -l < /proc/sysvipc/sem) -ge 2"
    )
    main_pid = int(box.run("systemctl show -p MainPID --value hostile.service").stdout)
    key = 0x61060000 | (main_pid & 0xFFFF)
    assert sysvipc_keys(box, "shm") == [key] and sysvipc_keys(box, "sem") == [key]
    # the service itself (uid 65534) did load the hostile package and the preload
    assert box.run(f"ls {HOSTILE}/marks").stdout.split() == ["preload.65534", "pythonpath.65534"]

    box.run("systemctl kill -s KILL hostile.service")
    box.wait_until("test $(systemctl show -p ActiveState --value hostile.service) = failed")

    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    records = journal(box, "IPCJANITOR_UNIT=hostile.service")
    assert sorted(str(r["IPCJANITOR_KIND"]) for r in records) == ["sem", "shm"]
    for r in records:
        assert r["IPCJANITOR_VERDICT"] == "removed" and r["IPCJANITOR_OWNER"] == "hostile"
        assert r["IPCJANITOR_KEY"] == f"0x{key:08x}"
        assert r["_UID"] == "0"  # the hook ran as root: it is what the environment targeted
    # root ran none of the hostile code, and wrote nothing where the environment pointed it
    assert box.run(f"ls {HOSTILE}/marks").stdout.split() == ["preload.65534", "pythonpath.65534"]
    assert box.run(f"ls -A {HOSTILE}/lock {HOSTILE}/tmp").stdout.split() == [
        f"{HOSTILE}/lock:",
        f"{HOSTILE}/tmp:",
    ]
    assert box.run("ls /run/ipcjanitor").stdout.split() != []  # its lock is where root's is
    assert box.run("systemctl show -p Result --value hostile.service").stdout.strip() == "signal"


# The four variables systemd sets for ExecStopPost= are the service's to override, and its
# UMask= reaches the hook too.
SAYS = """\
INVOCATION_ID=
SERVICE_RESULT=success
EXIT_CODE=exited
EXIT_STATUS="KILL by the administrator (ticket 4711)"
"""
ENV_POLICY = """\
[owners.says]
unit = "says.service"
keys = ["0x61070000-0x6107ffff"]
min_age = "0s"
"""


@pytest.mark.parametrize("umask", ["0000", "0777"])
def test_the_services_environment_and_umask_decide_nothing(box: Container, umask: str) -> None:
    box.write("/etc/ipcjanitor/policy.d/says.toml", ENV_POLICY)
    box.write("/usr/local/bin/maker", MAKER.replace("0x61060000", "0x61070000"), 0o755)
    box.write("/etc/says.env", SAYS)
    box.write(
        "/etc/systemd/system/says.service",
        f"[Service]\nUser=nobody\nUMask={umask}\nEnvironmentFile=/etc/says.env\n"
        "ExecStart=/usr/bin/python3 /usr/local/bin/maker\n",
    )
    box.run("systemctl daemon-reload")
    box.run(f"umask {umask} && ipcjanitor install-hook says.service")  # root's own umask too
    dropin = "/etc/systemd/system/says.service.d"
    assert box.run(f"stat -c %a {dropin} {dropin}/ipcjanitor.conf").stdout.split() == [
        "755",
        "644",
    ]
    box.run("systemctl start says.service")
    box.wait_until(
        "test $(wc -l < /proc/sysvipc/shm) -ge 2 && test $(wc -l < /proc/sysvipc/sem) -ge 2"
    )
    box.run("systemctl kill -s KILL says.service")
    box.wait_until("test $(systemctl show -p ActiveState --value says.service) = failed")

    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    # before the fix: INVOCATION_ID= sent every record to stderr, none had IPCJANITOR_UNIT=
    records = journal(box, "IPCJANITOR_UNIT=says.service")
    assert sorted(str(r["IPCJANITOR_KIND"]) for r in records) == ["sem", "shm"]
    for r in records:
        reason = str(r["IPCJANITOR_REASON"])
        assert "exited" in reason, reason  # the dead creator, as the kernel records it
        assert "4711" not in reason and "administrator" not in reason, reason
    said = box.run("journalctl --no-pager -o cat -u says.service").stdout
    assert 'its environment (which the service sets) reports SERVICE_RESULT="success"' in said, said
    # the files root created in the hook have their intended modes, whatever UMask= was
    # (the record of the clock's steps beside the lock is the clock recorder's, 0644)
    modes = box.run(
        "find /run/ipcjanitor ! -name clock-steps -printf '%y %m\\n' | sort -u"
    ).stdout.split("\n")
    # the lock directory is root's alone, the lock 0600 (issue 16.6)
    assert sorted(m for m in modes if m) == ["d 700", "f 600"], modes
    assert box.run("stat -c %a /run/ipcjanitor/clock-steps").stdout.strip() == "644"

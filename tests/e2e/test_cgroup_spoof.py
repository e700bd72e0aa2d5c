"""A user's delegated subtree names a directory after another unit (issue 20, the cgroup proof).

A Delegate=yes unit of User=nobody owns its cgroup: it may mkdir `victim.service` (or
`_victim.service`, the escaped spelling) inside it and move its own processes there. The
cgroup walk counts every directory named after a unit, so such a directory can only make
victim.service look RUNNING (its owner's objects kept), never make a running victim.service
look stopped, and the hook, which reads only its own cgroup, is not misled by it at all.
Run in the contained systemd WITHOUT pid_namespace_complete: only the cgroup proves there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from .conftest import HOOK_PATHS, hook_path, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


@pytest.fixture(params=HOOK_PATHS)
def box(box: Container, request: pytest.FixtureRequest) -> Iterator[Container]:
    """Each test twice: the hook in-process, and offered to the hook server (issue 20)."""
    yield from hook_path(box, request.param)


KEY = 0x64000001
POLICY = f"""\
[owners.victim]
unit = "victim.service"
keys = ["{KEY:#x}"]
min_age = "0s"
"""
VICTIM = f"""\
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shm = libc.shmget({KEY:#x}, 4096, 0o1600)
assert shm >= 0 and libc.shmat(shm, None, 0) not in (None, ctypes.c_void_p(-1).value)
open("/run/victim.ready", "w").write(str(os.getpid()))
while True:
    time.sleep(60)
"""
# argv: NAME:busy|empty ...: mkdir NAME in its own (delegated) cgroup; "busy": a child of
# its own moves into it. Runs as nobody: it can only touch the subtree systemd delegated to it.
ATTACKER = """\
import os, sys, time
own = [l[3:] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0]
base = "/sys/fs/cgroup/unified" + own
os.makedirs(base + "/main")
with open(base + "/main/cgroup.procs", "w") as f:  # no process in an inner node
    f.write(str(os.getpid()))
for arg in sys.argv[1:]:
    name, how = arg.split(":")
    os.makedirs(base + "/" + name)
    if how == "busy":
        kid = os.fork()
        if kid == 0:
            while True:
                time.sleep(60)
        with open(base + "/" + name + "/cgroup.procs", "w") as f:
            f.write(str(kid))
open("/run/attacker/ready", "w").write(base)
while True:
    time.sleep(60)
"""
RUNNING = "victim.service is running: it may attach by key again at any moment"


def _setup(box: Container, dirs: str) -> None:
    box.write("/etc/ipcjanitor/policy.d/test.toml", POLICY)  # no pid_namespace_complete
    assert "pid_namespace_complete" not in box.run("cat /etc/ipcjanitor/policy.d/*").stdout
    box.write("/usr/local/bin/victim", VICTIM, 0o755)
    box.write("/usr/local/bin/attacker", ATTACKER, 0o755)
    box.write(
        "/etc/systemd/system/victim.service",
        "[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/victim\n",
    )
    box.write(
        "/etc/systemd/system/attacker.service",
        "[Service]\nUser=nobody\nDelegate=yes\nRuntimeDirectory=attacker\n"
        f"ExecStart=/usr/bin/python3 /usr/local/bin/attacker {dirs}\n",
    )
    box.run("ipcjanitor install-hook victim.service")
    box.run("systemctl daemon-reload")


def _start_attacker(box: Container) -> str:
    box.run("systemctl start attacker.service")
    box.wait_until("test -s /run/attacker/ready")
    return box.run("cat /run/attacker/ready").stdout.strip()


def _verdict(box: Container, *, child_pidns: bool = False) -> tuple[str, str]:
    where = "unshare --pid --fork --mount-proc " if child_pidns else ""
    doc = json.loads(box.run(f"{where}ipcjanitor scan --json").stdout)
    found = [(o["verdict"], o["reason"]) for o in doc["objects"] if int(o["key"], 16) == KEY]
    assert len(found) == 1, doc
    return found[0]


def test_a_busy_same_named_directory_only_keeps_and_never_misleads_the_hook(
    box: Container,
) -> None:
    _setup(box, "victim.service:busy _victim.service:busy")
    base = _start_attacker(box)
    for name in ("victim.service", "_victim.service"):
        assert box.run(f"cat {base}/{name}/cgroup.procs").stdout.split(), name
    box.run("systemctl start victim.service")
    box.wait_until("test -s /run/victim.ready")
    box.run("systemctl kill -s KILL victim.service")
    box.wait_until("test $(systemctl show -p ActiveState --value victim.service) = failed")
    # the hook decides from its own cgroup: victim.service's processes are gone, its segment's
    # pids dead; the attacker's directory of that name is not victim.service's cgroup
    said = box.run("journalctl --no-pager -o cat -u victim.service").stdout
    assert "deciding from victim.service's own cgroup" in said, said
    assert KEY not in sysvipc_keys(box, "shm"), said
    # leaked again, its creator dead: the walk finds the attacker's busy directory named
    # victim.service, and that can only keep the segment
    box.run(
        "systemd-run --wait --unit=leak /usr/bin/python3 -c 'import ctypes; "
        f"libc = ctypes.CDLL(None); assert libc.shmget({KEY:#x}, 4096, 0o1600) >= 0'"
    )
    assert KEY in sysvipc_keys(box, "shm")
    for child_pidns in (False, True):
        verdict, reason = _verdict(box, child_pidns=child_pidns)
        assert verdict == "in-use" and reason.startswith("victim.service is running"), reason
    box.run("systemctl start ipcjanitor.service")  # what the timer starts
    box.run("ipcjanitor -q clean")
    assert KEY in sysvipc_keys(box, "shm")
    # once the attacker's processes are gone, nothing keeps it: victim.service is stopped
    box.run("systemctl stop attacker.service")
    box.run("systemctl start ipcjanitor.service")
    assert KEY not in sysvipc_keys(box, "shm")


def test_an_empty_same_named_directory_never_makes_a_running_unit_look_stopped(
    box: Container,
) -> None:
    _setup(box, "victim.service:empty _victim.service:empty")
    box.run("systemctl start victim.service")
    box.wait_until("test -s /run/victim.ready")
    base = _start_attacker(box)
    for name in ("victim.service", "_victim.service"):
        assert box.run(f"cat {base}/{name}/cgroup.procs").stdout == "", name
    for child_pidns in (False, True):
        verdict, reason = _verdict(box, child_pidns=child_pidns)
        assert verdict == "in-use" and reason.startswith("victim.service is running"), reason
    box.run("systemctl start ipcjanitor.service")
    box.run("ipcjanitor -q clean")
    box.run("unshare --pid --fork --mount-proc ipcjanitor -q clean")
    assert KEY in sysvipc_keys(box, "shm")


MOVER_KEY = 0x64000002
# Delegate=yes, User=nobody, KillMode=process: its leftover child (never attached) moves
# whatever systemd starts in the unit's cgroup after the main process (ExecStopPost=: the hook,
# run as root) into payload/mover.service, a directory of its own named after its own unit.
MOVER = f"""\
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
own = [l[3:] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0]
base = "/sys/fs/cgroup/unified" + own
os.makedirs(base + "/payload/mover.service")
with open(base + "/payload/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
if os.fork() == 0:
    mine = {{str(os.getpid()), str(os.getppid())}}
    while True:
        for where in (base, base + "/.control"):
            try:
                pids = open(where + "/cgroup.procs").read().split()
            except OSError:
                continue
            for pid in pids:
                if pid in mine:
                    continue
                try:
                    with open(base + "/payload/mover.service/cgroup.procs", "w") as f:
                        f.write(pid)
                    with open("/tmp/mover.moved", "a") as f:
                        f.write(pid + "\\n")
                except OSError as exc:
                    open("/tmp/mover.errors", "a").write(f"{{pid}} {{exc}}\\n")
        time.sleep(0.001)
shm = libc.shmget({MOVER_KEY:#x}, 4096, 0o1600)
assert shm >= 0 and libc.shmat(shm, None, 0) not in (None, ctypes.c_void_p(-1).value)
open("/tmp/mover.ready", "w").write(str(os.getpid()))
while True:
    time.sleep(60)
"""


def test_a_delegated_unit_cannot_move_its_hook_into_a_nested_directory_of_its_name(
    box: Container,
) -> None:
    box.write(
        "/etc/ipcjanitor/policy.d/test.toml",
        f'[owners.mover]\nunit = "mover.service"\nkeys = ["{MOVER_KEY:#x}"]\nmin_age = "0s"\n',
    )
    box.write("/usr/local/bin/mover", MOVER, 0o755)
    box.write(
        "/etc/systemd/system/mover.service",
        "[Service]\nUser=nobody\nDelegate=yes\nKillMode=process\n"
        "ExecStart=/usr/bin/python3 /usr/local/bin/mover\n",
    )
    box.run("ipcjanitor install-hook mover.service && systemctl daemon-reload")
    box.run("systemctl start mover.service")
    box.wait_until("test -s /tmp/mover.ready")
    assert MOVER_KEY in sysvipc_keys(box, "shm")
    box.run("systemctl kill -s KILL --kill-who=main mover.service")
    box.wait_until("test $(systemctl show -p ActiveState --value mover.service) = failed")
    said = box.run("journalctl --no-pager -o cat -u mover.service").stdout
    moved = box.run("cat /tmp/mover.moved /tmp/mover.errors", check=False).stdout
    assert "deciding from mover.service's own cgroup" in said, said
    assert box.run("test -s /tmp/mover.moved", check=False).returncode == 0, moved
    # its leftover child lives on in mover.service's cgroup: the unit runs, the segment stays
    assert MOVER_KEY in sysvipc_keys(box, "shm"), f"{said}\n{moved}"

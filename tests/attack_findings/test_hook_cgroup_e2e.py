"""The nested same-named cgroup attack under the contained real systemd (see
test_hook_cgroup.py for the model): a Delegate=yes service's surviving process moves the hook
from `.control` into `payload/nest.service` of the unit's own delegated subtree, and the hook,
reading only the innermost directory named after its unit, judges the running unit stopped."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import box, journal, sysvipc_keys  # noqa: F401  (box: the fixture)
from tests.e2e.container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

KEY = 0x63000002
POLICY = f"""\
[owners.nest]
unit = "nest.service"
keys = ["{KEY:#x}"]
min_age = "0s"
"""
# main: into payload/, creates the segment (never attached: nattch 0, lpid 0), forks the
# mover, exits on SIGTERM. mover (MOVE=1): stays alive (KillMode=process) and moves every
# pid that appears in .control into payload/nest.service, as fast as it can.
NEST = f"""\
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
move = sys.argv[1] == "1"
own = [l[3:] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0]
unit = "/sys/fs/cgroup/unified" + own
os.makedirs(unit + "/payload/nest.service", exist_ok=True)
with open(unit + "/payload/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
assert libc.shmget({KEY}, 4096, 0o1600) >= 0
if os.fork() == 0:  # the mover: a live process of the unit after the main process exits
    open("/run/nest.mover", "w").write(str(os.getpid()))
    while True:
        if move:
            try:
                pids = open(unit + "/.control/cgroup.procs").read().split()
            except OSError:
                pids = []
            for p in pids:
                try:
                    with open(unit + "/payload/nest.service/cgroup.procs", "w") as f:
                        f.write(p)
                    open("/run/nest.moved", "a").write(p + "\\n")
                except OSError:
                    pass
        time.sleep(0.0005)
open("/run/nest.ready", "w").write(str(os.getpid()))
signal.sigwait({{signal.SIGTERM}})
"""


def _run(box: Container, move: bool) -> tuple[list[int], str]:  # noqa: F811
    box.write("/etc/ipcjanitor/policy.d/nest.toml", POLICY)
    box.write("/usr/local/bin/nest", NEST, 0o755)
    box.write(
        "/etc/systemd/system/nest.service",
        "[Service]\nDelegate=yes\nKillMode=process\n"
        f"ExecStart=/usr/bin/python3 /usr/local/bin/nest {int(move)}\n",
    )
    box.run("ipcjanitor install-hook nest.service")
    box.run("systemctl daemon-reload && systemctl start nest.service")
    box.wait_until("test -s /run/nest.ready && test -s /run/nest.mover")
    assert sysvipc_keys(box, "shm") == [KEY]
    mover = box.run("cat /run/nest.mover").stdout.strip()
    box.run("systemctl stop nest.service")
    assert box.run(f"test -d /proc/{mover}", check=False).returncode == 0  # still alive
    said = box.run("journalctl --no-pager -o cat -u nest.service").stdout
    return sysvipc_keys(box, "shm"), said


def test_control_the_hook_keeps_a_running_units_segment(box: Container) -> None:  # noqa: F811
    left, said = _run(box, move=False)
    assert left == [KEY], said
    records = journal(box, "IPCJANITOR_UNIT=nest.service")
    assert [r["IPCJANITOR_VERDICT"] for r in records if r.get("IPCJANITOR_KIND") == "shm"] in (
        [],
        ["in-use"],
    ), records


def test_a_hook_moved_into_a_nested_same_named_cgroup_keeps_the_segment(
    box: Container,  # noqa: F811
) -> None:
    left, said = _run(box, move=True)
    moved = box.run("cat /run/nest.moved", check=False).stdout.split()
    assert left == [KEY], f"the mover moved {moved} and the hook removed the segment:\n{said}"

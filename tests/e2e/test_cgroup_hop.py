"""Issue 20's last race, on the real kernel: a Delegate=yes unit's leftover process hops
between two of its own sub-cgroups in a tight loop while `ipcjanitor hook --unit` runs again
and again inside that unit's cgroup. The walk reads one cgroup.procs after another and may
list the hopper in neither; the unit's pids.current (the v1 pids hierarchy on this hybrid
host) counts it throughout, so the segment must never be removed."""

from __future__ import annotations

import pytest

from .conftest import HOOK_PATHS, sysvipc_keys
from .container import ROOT, Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

KEY = 0x65000001
# the main process creates the segment (never attached) and exits by SIGKILL; its child
# (KillMode=process) hops between payload/a and payload/b as fast as it can
HOPPER = f"""\
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
own = [l[3:] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0]
base = "/sys/fs/cgroup/unified" + own + "/payload"
for d in ("a", "b"):
    os.makedirs(base + "/" + d, exist_ok=True)
assert libc.shmget({KEY:#x}, 4096, 0o1600) >= 0
if os.fork() == 0:
    me = str(os.getpid()).encode()
    where = [base + "/" + d + "/cgroup.procs" for d in ("a", "b")]
    while True:
        for path in where:  # a write on a kept fd fails (ENODEV): open each time
            try:
                fd = os.open(path, os.O_WRONLY)
                os.write(fd, me)
                os.close(fd)
            except OSError:  # systemd trims the unit's empty directories as it stops it
                os.makedirs(os.path.dirname(path), exist_ok=True)
open("/run/hop.ready", "w").write(str(os.getpid()))
while True:
    time.sleep(60)
"""
# a shell that joins the unit's directory in every hierarchy it has one in, then runs ARGV
# N times (as ExecStopPost= would run the hook there)
JOIN = (
    "for h in /sys/fs/cgroup/unified /sys/fs/cgroup/pids /sys/fs/cgroup/systemd; do "
    "d=$h/system.slice/hop.service; test -d $d && echo $$ > $d/cgroup.procs; done; "
    'for i in $(seq {n}); do {argv} || echo "hook failed $i"; done'
)


def _start(box: Container) -> None:
    box.write(
        "/etc/ipcjanitor/policy.d/test.toml",
        f'[owners.hop]\nunit = "hop.service"\nkeys = ["{KEY:#x}"]\nmin_age = "0s"\n',
    )
    box.write("/usr/local/bin/hopper", HOPPER, 0o755)
    box.write(
        "/etc/systemd/system/hop.service",
        "[Service]\nDelegate=yes\nKillMode=process\nExecStart=/usr/bin/python3 "
        "/usr/local/bin/hopper\n",
    )
    box.run("systemctl daemon-reload && systemctl start hop.service")
    box.wait_until("test -s /run/hop.ready")
    box.run("systemctl kill -s KILL --kill-who=main hop.service")
    box.wait_until("test $(systemctl show -p ActiveState --value hop.service) != active")
    assert KEY in sysvipc_keys(box, "shm")
    counter = box.run("cat /sys/fs/cgroup/pids/system.slice/hop.service/pids.current").stdout
    assert int(counter) == 1, counter  # the hopper alone (its parent exited)
    # empty siblings of a and b (made after systemd trimmed the stopped unit's empty ones): the
    # walk reads them between a and b, which widens the window the hopper can slip through
    box.run(
        "for i in $(seq 200); do mkdir -p "
        "/sys/fs/cgroup/unified/system.slice/hop.service/payload/m$i; done"
    )


LAUNCHER = f"{ROOT / 'ipcjanitor' / 'ipcjanitor-hook'} /usr/bin/ipcjanitor"


@pytest.mark.parametrize("path", HOOK_PATHS)
def test_a_hopping_process_keeps_its_units_segment_through_many_hooks(
    box: Container, path: str
) -> None:
    """In-process, or through the launcher to the hook server, which then counts the
    launcher's tasks as the hook's own."""
    _start(box)
    hook = "ipcjanitor"
    if path == "served":
        box.run("systemctl enable --now ipcjanitor-hook.socket")
        hook = LAUNCHER
    said = box.run(JOIN.format(n=1, argv=f"{hook} hook --unit hop.service"))
    where = "the hook server reads its launcher's" if path == "served" else "the hook runs in it"
    assert f"deciding from hop.service's own cgroup ({where})" in said.stdout + said.stderr, said
    said = box.run(JOIN.format(n=40, argv=f"{hook} -q hook --unit hop.service"))
    assert "hook failed" not in said.stdout, said.stdout + said.stderr
    assert KEY in sysvipc_keys(box, "shm"), said.stdout + said.stderr

"""The unit's own cgroup as the proof (issue 20), in the contained systemd WITHOUT
pid_namespace_complete: it is exactly such a container (its pid namespace is not the host's),
so only the cgroup tree can prove a unit stopped or running there."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from .conftest import HOOK_PATHS, hook_path, journal, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


@pytest.fixture(params=HOOK_PATHS)
def box(box: Container, request: pytest.FixtureRequest) -> Iterator[Container]:
    """Each test twice: the hook in-process, and offered to the hook server (issue 20)."""
    yield from hook_path(box, request.param)


POLICY = """\
[owners.leaky]
unit = "leaky.service"
keys = ["0x61040000-0x6104ffff"]
min_age = "0s"

[owners.orphans]
keys = ["0x70000000-0x7000ffff"]
min_age = "0s"

[owners.kept]
unit = "kept.service"
keys = ["0x62000001"]
min_age = "0s"

[owners.deleg]
unit = "deleg.service"
keys = ["0x63000001"]
min_age = "0s"
"""
# argv: KEY MODE NAME. MODE "child": a child that outlives the main process (KillMode=process);
# "payload": the main process moves into a sub-cgroup of its own unit first (Delegate=yes)
WORKER = """\
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
key, mode, name = int(sys.argv[1], 0), sys.argv[2], sys.argv[3]
if mode == "payload":
    own = [l[3:] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0]
    sub = "/sys/fs/cgroup/unified" + own + "/payload"
    os.makedirs(sub, exist_ok=True)
    with open(sub + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
shm = libc.shmget(key, 4096, 0o1600)
assert shm >= 0 and libc.shmat(shm, None, 0) not in (None, ctypes.c_void_p(-1).value)
sem = libc.semget(key, 1, 0o1600)
op = (ctypes.c_short * 3)(0, 1, 0)
assert sem >= 0 and libc.semop(sem, op, 1) == 0
if mode == "child":
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(60)
    open(f"/run/{name}.child", "w").write(str(child))
open(f"/run/{name}.ready", "w").write(str(os.getpid()))
while True:
    time.sleep(60)
"""
# what is in the unit's cgroup while ExecStopPost= runs: this shell and its `cat`, and no other
PROBE = (
    "ExecStopPost=/bin/sh -c 'echo $$$$ > /run/stoppost.pid; cg=$(sed -n s/^0:://p "
    "/proc/self/cgroup); echo $cg > /run/stoppost.cgroup; "
    "cat /sys/fs/cgroup/unified$cg/cgroup.procs > /run/stoppost.procs'\n"
)
RUNNING = "is running: it may attach by key again at any moment"
UNSEEN = (
    "is running (its cgroup lists 1 process(es) this pid namespace cannot see (pid 0 in "
    "cgroup.procs)): it may attach by key again at any moment"
)


def _setup(box: Container) -> None:
    box.write("/etc/ipcjanitor/policy.d/test.toml", POLICY)  # no pid_namespace_complete
    assert "pid_namespace_complete" not in box.run("cat /etc/ipcjanitor/policy.d/*").stdout
    box.write("/usr/local/bin/worker", WORKER, 0o755)


def _unit(box: Container, name: str, key: int, mode: str, extra: str = "") -> None:
    box.write(
        f"/etc/systemd/system/{name}.service",
        f"[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/worker {key:#x} {mode} {name}\n"
        + extra,
    )


def _scan(box: Container, *, child_pidns: bool = False) -> dict[tuple[str, int], tuple[str, str]]:
    where = "unshare --pid --fork --mount-proc " if child_pidns else ""
    doc = json.loads(box.run(f"{where}ipcjanitor scan --json").stdout)
    return {(o["kind"], int(o["key"], 16)): (o["verdict"], o["reason"]) for o in doc["objects"]}


def test_the_hook_removes_a_sigkilled_units_segments_from_its_own_cgroup(box: Container) -> None:
    _setup(box)
    box.run("ipcjanitor install-hook leaky.service")
    box.write("/etc/systemd/system/leaky.service.d/zz-probe.conf", f"[Service]\n{PROBE}")
    box.run("systemctl daemon-reload && systemctl start leaky.service")
    main_pid = int(box.run("systemctl show -p MainPID --value leaky.service").stdout)
    key = 0x61040000 | (main_pid & 0xFFFF)
    box.wait_until(f"awk '{{print $1}}' /proc/sysvipc/sem | grep -qx {key}")
    # without the cgroup the container's pid namespace proves nothing of the unit
    assert _scan(box)[("shm", key)] == ("in-use", f"leaky.service {RUNNING}")
    box.run("systemctl kill -s KILL leaky.service")
    box.wait_until("test $(systemctl show -p ActiveState --value leaky.service) = failed")
    box.wait_until("test -s /run/stoppost.procs")
    said = box.run("journalctl --no-pager -o cat -u leaky.service").stdout
    # the segment's pids are visible and dead: removed; the set's second semaphore was never
    # operated on, its only pid reads 0: a doubt outside the host's pid namespace, kept
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == [key], said
    records = {str(r["IPCJANITOR_KIND"]): r for r in journal(box, "IPCJANITOR_UNIT=leaky.service")}
    assert records["shm"]["IPCJANITOR_VERDICT"] == "removed"
    assert f"pid {main_pid} exited" in str(records["shm"]["IPCJANITOR_REASON"])
    assert records["sem"]["IPCJANITOR_VERDICT"] == "unknown"
    assert str(records["sem"]["IPCJANITOR_REASON"]).startswith(
        "last semop on sem 1 pid reads 0, which may hide a pid (ipcjanitor runs outside the "
        "host's pid namespace"
    )
    assert "deciding from leaky.service's own cgroup (" in said, said
    # while ExecStopPost= runs, the unit's cgroup holds the command and its children only
    shell = box.run("cat /run/stoppost.pid").stdout.strip()
    procs = box.run("cat /run/stoppost.procs").stdout.split()
    assert box.run("cat /run/stoppost.cgroup").stdout.strip() == "/system.slice/leaky.service"
    assert shell in procs and len(procs) == 2, procs  # sh and its cat


def test_from_a_child_pid_namespace_a_running_unit_is_in_use_and_a_zero_pid_a_doubt(
    box: Container,
) -> None:
    _setup(box)
    box.run("systemctl start leaky.service")
    main_pid = int(box.run("systemctl show -p MainPID --value leaky.service").stdout)
    key = 0x61040000 | (main_pid & 0xFFFF)
    box.wait_until(f"awk '{{print $1}}' /proc/sysvipc/sem | grep -qx {key}")
    # an unowned-by-unit set whose last operator lives on, outside the scan's pid namespace
    box.run(
        "systemd-run --unit=holder /usr/bin/python3 -c 'import ctypes, time; "
        "libc = ctypes.CDLL(None); s = libc.semget(0x70000001, 1, 0o1600); "
        "op = (ctypes.c_short * 3)(0, 1, 0); assert libc.semop(s, op, 1) == 0; "
        'open("/run/holder.ready", "w").write("1"); time.sleep(3600)\''
    )
    box.wait_until("test -s /run/holder.ready")
    seen = _scan(box, child_pidns=True)
    for kind in ("shm", "sem"):
        assert seen[(kind, key)] == ("in-use", f"leaky.service {UNSEEN}"), seen
    verdict, reason = seen[("sem", 0x70000001)]
    assert verdict == "unknown", seen
    assert "pid reads 0" in reason and "hidden from our pid namespace" in reason, reason
    # scan -v and doctor say why, once, naming the container manager (systemd's record)
    inside = "unshare --pid --fork --mount-proc ipcjanitor"
    said = box.run(f"{inside} scan -v", check=False).stderr
    line = (
        "ipcjanitor: 1 object(s) are unknown only because ipcjanitor runs in a container "
        "(ipcjanitor-test), outside the host's pid namespace"
    )
    assert said.count(line) == 1, said
    assert "`pid_namespace_complete = true` in the policy asserts" in said, said
    doctor = box.run(f"{inside} doctor", check=False).stdout
    assert "1 object(s) are unknown only because ipcjanitor runs in a container" in doctor, doctor
    # nothing is removed from there either
    box.run("unshare --pid --fork --mount-proc ipcjanitor -q clean")
    assert key in sysvipc_keys(box, "shm") and 0x70000001 in sysvipc_keys(box, "sem")


def test_killmode_process_leaves_a_child_in_the_cgroup_kept_by_hook_and_timer(
    box: Container,
) -> None:
    _setup(box)
    key = 0x62000001
    _unit(box, "kept", key, "child", "KillMode=process\n")
    box.run("ipcjanitor install-hook kept.service")
    box.run("systemctl daemon-reload && systemctl start kept.service")
    box.wait_until("test -s /run/kept.ready")
    box.run("systemctl kill -s KILL --kill-who=main kept.service")
    box.wait_until("test $(systemctl show -p ActiveState --value kept.service) = failed")
    child = int(box.run("cat /run/kept.child").stdout)
    assert box.run(f"test -d /proc/{child}", check=False).returncode == 0
    said = box.run("journalctl --no-pager -o cat -u kept.service").stdout
    assert "deciding from kept.service's own cgroup" in said, said  # the hook ran
    assert key in sysvipc_keys(box, "shm") and key in sysvipc_keys(box, "sem")
    box.run("systemctl start ipcjanitor.service")  # what the timer starts
    assert key in sysvipc_keys(box, "shm") and key in sysvipc_keys(box, "sem")
    assert _scan(box)[("shm", key)] == ("in-use", f"kept.service {RUNNING}")
    box.run(f"kill -9 {child}")  # ours: the test's unit's child
    box.wait_until(f"! test -d /proc/{child}")
    box.run("systemctl start ipcjanitor.service")
    assert key not in sysvipc_keys(box, "shm") and key not in sysvipc_keys(box, "sem")


def test_a_delegated_units_sub_cgroups_are_the_unit(box: Container) -> None:
    _setup(box)
    key = 0x63000001
    _unit(box, "deleg", key, "payload", "Delegate=yes\n")
    box.run("ipcjanitor install-hook deleg.service")
    box.run("systemctl daemon-reload && systemctl start deleg.service")
    box.wait_until("test -s /run/deleg.ready")
    main_pid = box.run("cat /run/deleg.ready").stdout.strip()
    cg = box.run(f"sed -n s/^0:://p /proc/{main_pid}/cgroup").stdout.strip()
    assert cg == "/system.slice/deleg.service/payload", cg
    assert box.run(f"cat /sys/fs/cgroup/unified{cg}/../cgroup.procs").stdout == ""
    for child_pidns, why in ((False, RUNNING), (True, UNSEEN)):
        seen = _scan(box, child_pidns=child_pidns)
        assert seen[("shm", key)] == ("in-use", f"deleg.service {why}"), seen
    box.run("systemctl kill -s KILL deleg.service")
    box.wait_until("test $(systemctl show -p ActiveState --value deleg.service) = failed")
    assert key not in sysvipc_keys(box, "shm") and key not in sysvipc_keys(box, "sem")

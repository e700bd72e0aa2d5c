"""Scenarios run INSIDE `unshare --ipc --mount [--pid --fork --mount-proc]` by harness.py.

Each builds real objects with real processes, SIGKILLs what should die, runs the real
ipcjanitor command, and prints {"runs": [...]} as its last line of output.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration import sysv

POLICY = ""
SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {}


def scenario(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    SCENARIOS[fn.__name__] = fn
    return fn


def janitor(
    *args: str, policy: str | None = None, user: str | None = None, groups: str | None = None
) -> dict[str, Any]:
    policy = str(policy or POLICY)
    env = dict(os.environ)
    if user:  # a place that user can read the policy from and lock in
        scratch = Path(tempfile.mkdtemp())
        scratch.chmod(0o1777)
        policy = str(shutil.copy(policy, scratch / "policy.toml"))
        env["IPCJANITOR_LOCK_DIR"] = str(scratch)
    cmd = [sys.executable, "-m", "ipcjanitor", "--policy", str(policy), *args]
    if user:
        grouping = f"--groups={groups}" if groups else "--clear-groups"
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", grouping, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    out: dict[str, Any] = {"rc": proc.returncode, "stderr": proc.stderr}
    if "--json" in args and proc.stdout.strip().startswith("{"):
        out["doc"] = json.loads(proc.stdout)
    else:
        out["stdout"] = proc.stdout
    return out


def verdicts(run: dict[str, Any]) -> dict[str, list[str]]:
    """key -> [verdict, reason] of a JSON run."""
    return {o["key"]: [o["verdict"], o["reason"]] for o in run["doc"]["objects"]}


def ipcs_keys() -> list[str]:
    keys = []
    for table in ("shm", "sem", "msg"):
        lines = Path(f"/proc/sysvipc/{table}").read_text().splitlines()[1:]
        keys += [f"0x{int(line.split()[0]) & 0xFFFFFFFF:08x}" for line in lines]
    return sorted(keys)


@scenario
def killed_creators() -> dict[str, Any]:
    """Each kind made by a process that is then SIGKILLed; one key outside the policy."""

    def make() -> None:
        shm = sysv.shmget(0x10000001)
        sysv.shmat(shm)
        sem = sysv.semget(0x10000002, 2)
        sysv.semop(sem, 0, 1)
        sysv.semop(sem, 1, 1)
        q = sysv.msgget(0x10000003)
        sysv.msgsnd(q)
        sysv.msgget(0x10000004)  # a queue that records no pid
        sysv.shmat(sysv.shmget(0x20000001))  # outside the policy

    pid = sysv.spawn(make)
    sysv.kill9(pid)
    scan = janitor("scan", "--json")
    clean = janitor("clean", "--json")
    return {
        "pid": pid,
        "scan": verdicts(scan),
        "clean": verdicts(clean),
        "clean_rc": clean["rc"],
        "left": ipcs_keys(),
        "scan_doc": scan["doc"],
        "clean_stderr": clean["stderr"],
    }


@scenario
def signs_of_life() -> dict[str, Any]:
    """Attached segment with a dead creator; a semaphore with a blocked waiter; a live creator."""

    def make_shm() -> None:
        sysv.shmget(0x10000011)

    creator = sysv.spawn(make_shm)
    shmid = sysv.shmget(0x10000011)
    attacher = sysv.spawn(lambda: sysv.shmat(shmid))
    sysv.kill9(creator)

    def make_sem() -> None:
        sem = sysv.semget(0x10000012)
        sysv.semop(sem, 0, 1)
        sysv.semop(sem, 0, -1)

    sem_creator = sysv.spawn(make_sem)
    semid = sysv.semget(0x10000012)
    waiter = sysv.spawn(lambda: sysv.semop(semid, 0, -1), block=True)
    sysv.wait_for(lambda: sysv.ncnt(semid) > 0)
    sysv.kill9(sem_creator)
    live = sysv.spawn(lambda: sysv.shmget(0x10000013))  # alive, nothing attached
    run = janitor("clean", "--json")
    for pid in (attacher, waiter, live):
        sysv.kill9(pid)
    return {"clean": verdicts(run), "left": ipcs_keys()}


@scenario
def young_and_data() -> dict[str, Any]:
    """min_age keeps a just-used object; a queue holding a message is kept."""

    def make() -> None:
        sysv.shmat(sysv.shmget(0x10000021))
        sysv.msgsnd(sysv.msgget(0x30000001))

    sysv.kill9(sysv.spawn(make))
    run = janitor("clean", "--json")
    return {"clean": verdicts(run), "left": ipcs_keys()}


@scenario
def private_by_uid() -> dict[str, Any]:
    """IPC_PRIVATE segments of uid 4242 (claimed) and uid 4343 (not), creators killed."""

    def make(uid: int) -> Callable[[], None]:
        def body() -> None:
            os.setgid(uid)
            os.setuid(uid)
            sysv.shmat(sysv.shmget(0))

        return body

    for uid in (4242, 4343):
        sysv.kill9(sysv.spawn(make(uid)))
    run = janitor("clean", "--json")
    objs = [(o["uid"], o["verdict"], o["reason"]) for o in run["doc"]["objects"]]
    return {
        "objects": objs,
        "left_uids": [
            int(line.split()[7]) for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        ],
    }


@scenario
def pid_reuse() -> dict[str, Any]:
    """The creator's pid is handed to a younger process through ns_last_pid."""

    def make() -> None:
        sysv.shmat(sysv.shmget(0x10000031))

    creator = sysv.spawn(make)
    sysv.kill9(creator)
    time.sleep(3.5)  # the impostor must start clearly after the object's last activity
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(creator - 1))
    impostor = sysv.spawn(lambda: None)
    scan = janitor("scan", "--json")
    # control: the same pid, still the real creator, is alive
    creator2 = sysv.spawn(lambda: sysv.shmget(0x10000032))
    scan2 = janitor("scan", "--json")
    for pid in (impostor, creator2):
        sysv.kill9(pid)
    return {
        "creator": creator,
        "impostor": impostor,
        "scan": verdicts(scan),
        "control": verdicts(scan2),
    }


@scenario
def changed_between() -> dict[str, Any]:
    """Between the scan and the removal: one object is removed and recreated, one is attached."""
    sys.path.insert(0, str(Path(__file__).parents[2]))
    from ipcjanitor.engine.remove import remove_stale
    from ipcjanitor.engine.run import survey
    from ipcjanitor.policy import load as policy_mod

    def make() -> None:
        sysv.shmat(sysv.shmget(0x10000041))
        sysv.shmat(sysv.shmget(0x10000042))

    sysv.kill9(sysv.spawn(make))
    decisions = survey(policy_mod.load_policy(POLICY))
    before = {f"0x{d.obj.key:08x}": d.verdict.value for d in decisions}
    old = next(d.obj.id for d in decisions if d.obj.key == 0x10000041)
    sysv.libc.shmctl(old, 0, None)  # IPC_RMID, then the same key again
    sysv.shmget(0x10000041)
    shmid = sysv.shmget(0x10000042)
    user = sysv.spawn(lambda: sysv.shmat(shmid))
    after = {f"0x{d.obj.key:08x}": [d.verdict.value, d.reason] for d in remove_stale(decisions)}
    sysv.kill9(user)
    return {"before": before, "after": after, "left": ipcs_keys()}


def attach_by_key(key: int) -> None:
    sysv.shmat(sysv.shmget(key))


@scenario
def unit_stand_in() -> dict[str, Any]:
    """A service-like tree in a cgroup named like a unit; short-lived children attach and exit."""
    base = Path(os.environ["IJ_CGROUP"])
    unit_dir = base / "billing.service"
    unit_dir.mkdir()
    try:

        def service() -> None:
            (unit_dir / "cgroup.procs").write_text(str(os.getpid()))
            for key in (0x10000051, 0x10000052):
                sysv.run_and_exit(functools.partial(attach_by_key, key))
            sysv.run_and_exit(lambda: sysv.semget(0x10000053))  # never operated on

        main = sysv.spawn(service)
        running = janitor("scan", "--json")
        sysv.kill9(main)
        stopped = janitor("clean", "--json")
    finally:
        unit_dir.rmdir()
    return {"running": verdicts(running), "stopped": verdicts(stopped), "left": ipcs_keys()}


@scenario
def unprivileged() -> dict[str, Any]:
    """A run as nobody over root's objects: IPC_RMID refused, reported failed, exit 1."""

    def make() -> None:
        sysv.shmat(sysv.shmget(0x10000061, mode=0o644))
        sysv.shmat(sysv.shmget(0x10000062, mode=0o644))

    sysv.kill9(sysv.spawn(make))
    run = janitor("clean", "--json", user="65534")
    return {"rc": run["rc"], "clean": verdicts(run), "left": ipcs_keys(), "stderr": run["stderr"]}


@scenario
def hidden_creator() -> dict[str, Any]:
    """The creator lives outside ipcjanitor's pid namespace: its pid reads 0, so unknown."""

    def make() -> None:
        sysv.shmget(0x10000071)  # alive, nothing attached, but invisible from inside

    outsider = sysv.spawn(make)
    proc = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-m",
            "ipcjanitor",
            "--policy",
            POLICY,
            "clean",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    sysv.kill9(outsider)
    return {
        "rc": proc.returncode,
        "clean": verdicts({"doc": json.loads(proc.stdout)}),
        "left": ipcs_keys(),
        "stderr": proc.stderr,
    }


@scenario
def bad_policy() -> dict[str, Any]:
    """A policy error: exit 78, and the stale object is still there."""

    def make() -> None:
        sysv.shmat(sysv.shmget(0x10000081))

    sysv.kill9(sysv.spawn(make))
    run = janitor("clean")
    return {"rc": run["rc"], "stderr": run["stderr"], "left": ipcs_keys()}


@scenario
def table_nearly_full() -> dict[str, Any]:
    """kernel.shmmni lowered to 25 and 24 segments leaked by a SIGKILLed worker: 96 %."""
    Path("/proc/sys/kernel/shmmni").write_text("25")

    def make() -> None:
        for i in range(24):
            sysv.shmat(sysv.shmget(0x10000100 + i))

    sysv.kill9(sysv.spawn(make))
    full = janitor("doctor", "--json")
    janitor("clean")
    after = janitor("doctor", "--json")
    return {
        "full_rc": full["rc"],
        "full": full["doc"],
        "after_rc": after["rc"],
        "after": after["doc"],
    }


def _stuck_writer() -> None:
    """The supervisord leak: stdout is a pipe whose read end only this process holds."""
    r, w = os.pipe()
    os.dup2(w, 1)
    os.close(w)
    chunk = b"x" * 4096
    while True:
        os.write(1, chunk)  # blocks for good once the pipe buffer is full
    os.close(r)  # never reached: r stays open, held by nobody else


@scenario
def stuck_pipes() -> dict[str, Any]:
    """An orphaned writer stuck on its own pipe; two busy but healthy pipelines."""
    middle = os.fork()
    if middle == 0:  # double fork: the writer's parent exits, so it is orphaned
        if os.fork() == 0:
            _stuck_writer()
        os._exit(0)
    os.waitpid(middle, 0)
    healthy = [
        subprocess.Popen(["sh", "-c", "yes | head -c 100000000 > /dev/null"]),
        subprocess.Popen(["sh", "-c", "yes | sleep 60"]),  # writer blocked, reader alive: fine
    ]
    time.sleep(1.0)
    blocked = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and "pipe_write" in Path(f"/proc/{p}/wchan").read_text()
    ]
    run = janitor("doctor", "--json")
    for p in healthy:
        p.kill()
        p.wait()
    stuck = run["doc"]["stuck_pipes"]
    for s in stuck:
        os.kill(s["pid"], 9)
    return {"rc": run["rc"], "stuck": stuck, "blocked_writers": len(blocked)}


@scenario
def sources_agree() -> dict[str, Any]:
    """The kernel's *_STAT_ANY listing and /proc/sysvipc give the very same objects."""
    from ipcjanitor.kernel import sysvipc as procfs
    from ipcjanitor.model import IpcKind

    def make() -> None:
        sysv.shmat(sysv.shmget(0x10000091, 8192))
        sysv.shmget(0)
        sem = sysv.semget(0x10000092, 3)
        sysv.semop(sem, 1, 2)
        sysv.msgsnd(sysv.msgget(0x10000093), b"abc")

    sysv.kill9(sysv.spawn(make))
    kernel = {k.value: [o._asdict() for o in procfs._from_kernel(k)] for k in IpcKind}
    text = {k.value: [o._asdict() for o in procfs._from_procfs(k, Path("/proc"))] for k in IpcKind}
    return {
        "kernel": repr(kernel),
        "proc": repr(text),
        "counts": {k: len(v) for k, v in kernel.items()},
    }


@scenario
def hidepid() -> dict[str, Any]:
    """/proc with hidepid=invisible, run as nobody: a hidden live creator is unknown, never stale."""
    subprocess.run(["mount", "-o", "remount,hidepid=invisible", "/proc"], check=True)
    alive = sysv.spawn(lambda: sysv.shmget(0x100000A1, mode=0o644))  # alive, nothing attached

    def dead() -> None:
        sysv.shmat(sysv.shmget(0x100000A2, mode=0o644))

    sysv.kill9(sysv.spawn(dead))
    run = janitor("scan", "--json", user="65534")
    sysv.kill9(alive)
    return {"rc": run["rc"], "scan": verdicts(run)}


@scenario
def subset_pid() -> dict[str, Any]:
    """/proc with subset=pid (no /proc/sysvipc, every pid visible): decisions stay right."""
    subprocess.run(["mount", "-o", "remount,subset=pid", "/proc"], check=True)
    alive = sysv.spawn(lambda: sysv.shmget(0x100000B1))

    def dead() -> None:
        sysv.shmat(sysv.shmget(0x100000B2))

    sysv.kill9(sysv.spawn(dead))
    run = janitor("clean", "--json")
    sysv.kill9(alive)
    return {
        "rc": run["rc"],
        "clean": verdicts(run),
        "left": sorted(f"0x{row[1]:08x}" for row in sysv_rows()),  # no /proc/sysvipc here
    }


def _clean_with_proc_changed(key: int, how: str) -> dict[str, Any]:
    """A stale segment, then `clean` in a new mount namespace after the shell commands `how`."""

    def dead() -> None:
        sysv.shmat(sysv.shmget(key))

    sysv.kill9(sysv.spawn(dead))
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c",
         f"{how}; exec {sys.executable} -m ipcjanitor --policy {POLICY} clean"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return {"rc": proc.returncode, "stderr": proc.stderr, "left": ipcs_keys()}


@scenario
def foreign_proc() -> dict[str, Any]:
    """/proc from another pid namespace (pids would mean other processes): refuse, remove nothing."""
    return _clean_with_proc_changed(0x100000D1, "umount -l /proc")  # uncovers the host's /proc


@scenario
def no_proc() -> dict[str, Any]:
    """No /proc at all: the process table is invisible, so nothing is removed, exit non-zero."""
    # --mount-proc stacked our /proc on the host's: unmount until none is left
    return _clean_with_proc_changed(
        0x100000C1, "while mountpoint -q /proc; do umount -l /proc; done"
    )


def _stale_shm(n: int, base: int) -> None:
    def make() -> None:
        for i in range(n):
            sysv.shmat(sysv.shmget(base + i))

    sysv.kill9(sysv.spawn(make))


@scenario
def killed_mid_clean() -> dict[str, Any]:
    """SIGKILL ipcjanitor right after its first removal of 10,000; the next run finishes."""
    Path("/proc/sys/kernel/shmmni").write_text("32768")
    _stale_shm(10000, 0x10100000)
    before = {row[0]: row[1:] for row in sysv_rows()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipcjanitor", "--policy", POLICY, "-q", "clean"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    proc.kill()
    proc.wait()
    after = {row[0]: row[1:] for row in sysv_rows()}
    intact = all(before[i] == rest for i, rest in after.items())
    again = janitor("clean", "--json")
    removed_again = sum(1 for o in again["doc"]["objects"] if o["verdict"] == "removed")
    return {
        "first": first,
        "left_after_kill": len(after),
        "intact": intact,
        "rc": again["rc"],
        "removed_again": removed_again,
        "left": len(ipcs_keys()),
    }


def sysv_rows() -> list[tuple[Any, ...]]:
    from ipcjanitor import _sysvipc

    return _sysvipc.list_kind(0)


@scenario
def concurrent_runs() -> dict[str, Any]:
    """Two cleans and a hook at once over 3,000 stale objects: each removed exactly once."""
    _stale_shm(3000, 0x10200000)
    cmds = [
        [sys.executable, "-m", "ipcjanitor", "--policy", POLICY, "clean", "--json"],
        [sys.executable, "-m", "ipcjanitor", "--policy", POLICY, "clean", "--json"],
        [
            sys.executable,
            "-m",
            "ipcjanitor",
            "--policy",
            POLICY,
            "hook",
            "--unit",
            "svc.service",
            "--json",
        ],
    ]
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for c in cmds
    ]
    docs = [json.loads(p.communicate()[0]) for p in procs]
    removed = [o["key"] for d in docs for o in d["objects"] if o["verdict"] == "removed"]
    return {
        "rcs": [p.returncode for p in procs],
        "removed": len(removed),
        "distinct": len(set(removed)),
        "failed": sum(1 for d in docs for o in d["objects"] if o["verdict"] == "failed"),
        "notes": [d["summary"].get("notes", []) for d in docs],
        "left": len(ipcs_keys()),
        "locks": sorted(p.name for p in Path("/run/ipcjanitor").glob("*.lock")),
    }


@scenario
def metrics_file() -> dict[str, Any]:
    """clean --metrics twice: gauges for the run, a removals counter carried across runs."""
    out = Path(tempfile.mkdtemp()) / "ipcjanitor.prom"
    _stale_shm(3, 0x100000E0)
    first = janitor("clean", "--metrics", str(out))
    text1 = out.read_text()
    _stale_shm(2, 0x100000F0)
    janitor("clean", "--metrics", str(out))
    return {
        "rc": first["rc"],
        "first": text1,
        "second": out.read_text(),
        "mode": oct(out.stat().st_mode & 0o777),
    }


@scenario
def metrics_for_node_exporter() -> dict[str, Any]:
    """The timer's file and two hooks' files, as node_exporter's textfile directory holds them:
    clean --metrics over stale objects, then hook --metrics for a.service and b.service."""
    out = Path(sys.argv[3])
    _stale_shm(3, 0x10000300)
    runs = [janitor("-q", "clean", "--metrics", str(out / "ipcjanitor.prom"))]
    for unit in ("a.service", "b.service"):
        _stale_shm(2, 0x10000400 if unit == "a.service" else 0x10000500)
        runs.append(janitor("-q", "hook", "--unit", unit, "--metrics",
                            str(out / f"ipcjanitor-{unit}.prom")))  # fmt: skip
    return {"rcs": [r["rc"] for r in runs], "stderr": [r["stderr"] for r in runs]}


@scenario
def php_unreachable_queues() -> dict[str, Any]:
    """PHP 8.2's msg_queue_exists(0) makes an IPC_PRIVATE mode-000 queue per call."""
    for _ in range(3):
        subprocess.run(["php", "-r", "msg_queue_exists(0);"], check=True)
    used = sysv.msgget(0, 0o600)  # a private queue someone uses: reachable by its id
    sysv.msgsnd(used, b"hello")
    doctor = janitor("doctor", "--json")
    text = janitor("doctor")
    return {"rc": doctor["rc"], "doc": doctor["doc"], "used": used, "text": text["stdout"]}


def _queue_ids() -> list[int]:
    lines = Path("/proc/sysvipc/msg").read_text().splitlines()[1:]
    return sorted(int(line.split()[1]) for line in lines)


@scenario
def php_unitless_private_queues() -> dict[str, Any]:
    """Issue 22's own case: PHP 8.2's msg_get_queue(0) as the suite's user (nobody), under
    an owner without `unit` that claims that user's IPC_PRIVATE objects: each queue is kept
    as `unknown` (it records no pid) and doctor lists it with its removal."""
    for _ in range(2):
        run = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        subprocess.run([*run, "php", "-r", "msg_get_queue(0);"], check=True)
    used = sysv.msgget(0, 0o600)  # root's private queue, in use: neither claimed nor listed
    sysv.msgsnd(used, b"hello")
    clean = janitor("clean", "--json")
    doctor = janitor("doctor", "--json")
    text = janitor("doctor")
    return {"clean": clean, "doc": doctor["doc"], "rc": doctor["rc"], "used": used,
            "text": text["stdout"], "left": _queue_ids()}  # fmt: skip


def main() -> None:
    global POLICY  # noqa: PLW0603  (the policy file of this run, for janitor())
    POLICY = sys.argv[2]
    result = SCENARIOS[sys.argv[1]]()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Benchmarks: ipcjanitor clean against `ipcrm --all` and the `ipcs | awk | xargs ipcrm` recipe.

Run by `make bench`. Re-executes itself inside `unshare --ipc --pid --fork --mount-proc`, so it
never touches the host's IPC namespace. Prints times (best of several) and ratios.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the tree whose ipcjanitor is measured: this one, or BENCH_TREE (an older checkout, run with
# its own venv's python, to compare before and after: bench/README.md)
ROOT = Path(os.environ.get("BENCH_TREE") or Path(__file__).resolve().parents[1])
PY = sys.executable
libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT = 0o1000
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
POLICY = 'min_age = "0s"\n[owners.bench]\nkeys = ["0x10000000-0x1fffffff"]\n'


class SemBuf(ctypes.Structure):
    _fields_ = [("num", ctypes.c_ushort), ("op", ctypes.c_short), ("flg", ctypes.c_short)]


def in_dead_child(fn, *args) -> int:  # type: ignore[no-untyped-def]
    """Run fn in a child, then SIGKILL it: its objects outlive it. Returns its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
            os.write(w, b"k")
            signal.pause()
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 1) == b"k"
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return pid


def populate(n_shm: int, n_sem: int, creators: int = 1) -> None:
    per = max(1, (n_shm + n_sem) // creators)
    done_shm = done_sem = 0
    for c in range(creators):
        s = min(n_shm - done_shm, per if c < creators - 1 else n_shm - done_shm)
        m = min(n_sem - done_sem, max(0, per - s) if c < creators - 1 else n_sem - done_sem)
        base = 0x10000000 + done_shm

        def both(s: int = s, m: int = m, base: int = base, sem_off: int = done_sem) -> None:
            op = SemBuf(0, 1, 0)
            for i in range(s):
                assert libc.shmget(base + i, 1, IPC_CREAT | 0o600) >= 0
            for i in range(m):
                sem = libc.semget(0x11000000 + sem_off + i, 1, IPC_CREAT | 0o600)
                assert sem >= 0 and libc.semop(sem, ctypes.byref(op), 1) == 0

        in_dead_child(both)
        done_shm += s
        done_sem += m


def count() -> int:
    return sum(
        len(Path(f"/proc/sysvipc/{t}").read_text().splitlines()) - 1 for t in ("shm", "sem", "msg")
    )


PEAK_RSS: dict[str, int] = {}  # command -> the largest peak RSS (KiB) of its runs


def timed(cmd: list[str] | str, shell: bool = False) -> float:
    return timed_cpu(cmd, shell)[0]


def timed_cpu(cmd: list[str] | str, shell: bool = False) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU is user + system of the command and its children
    (wait4's rusage), which a loaded machine inflates far less than the wall time."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    key = str(cmd)
    PEAK_RSS[key] = max(PEAK_RSS.get(key, 0), usage.ru_maxrss)
    return elapsed, usage.ru_utime + usage.ru_stime


def crowd(n: int) -> int:
    """n live processes (forked, each asleep in pause()) in a session of their own: its id."""
    code = (
        "import os, signal, sys\n"
        f"for _ in range({n}):\n"
        "    if os.fork() == 0:\n"
        "        signal.pause()\n"
        "print('ready', flush=True)\n"
        "signal.pause()\n"
    )
    proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc.pid


def end_crowd(session: int) -> None:
    """SIGKILL the crowd (only the processes this benchmark started) and reap the orphans."""
    os.killpg(session, signal.SIGKILL)
    time.sleep(0.5)
    while True:  # we are pid 1 of this pid namespace: the orphans are ours to reap
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


def best(setup, cmd, shell: bool = False) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(REPEATS):
        setup()
        times.append(timed(cmd, shell))
        assert count() == 0, f"{cmd} left {count()} objects"
    return min(times)


# The kernel work every ipcjanitor check needs, with no decision and no Python per-object
# work beyond the calls: what no implementation of the contract can go below.
FLOOR = """
from ipcjanitor import _sysvipc as s
for kind, stat in ((0, s.shm_stat), (1, s.sem_stat)):
    for row in s.list_kind(kind):
        stat(row[0])
        s.rmid(kind, row[0])
"""


def janitor_cmd(policy: Path) -> list[str]:
    return [PY, "-m", "ipcjanitor", "--policy", str(policy), "-q", "clean"]


def crowded_rows(n: int, jan: float, policy: Path, tmp: Path) -> None:
    """The same clean with many more live processes in the table (issue 13.4)."""
    half = n // 2
    people = int(os.environ.get("BENCH_CROWD", "20000"))
    unit_policy = tmp / "unit-policy.toml"
    # this pid namespace holds every process of its IPC namespace: say so, or a unit without
    # processes proves nothing here
    unit_policy.write_text(
        "pid_namespace_complete = true\n"
        + POLICY.replace("[owners.bench]", '[owners.bench]\nunit = "bench.service"')
    )
    unit_jan = best(lambda: populate(half, half), janitor_cmd(unit_policy))
    session = crowd(people)
    try:
        crowded = best(lambda: populate(half, half), janitor_cmd(policy))
        crowded_rss = PEAK_RSS[str(janitor_cmd(policy))]
        unit_crowded = best(lambda: populate(half, half), janitor_cmd(unit_policy))
    finally:
        end_crowd(session)
    print(
        f"{n} objects with {people} more live processes in the table: {crowded:.3f} s "
        f"({crowded / jan:.2f}x the run without them; target <= 1.1x), peak RSS "
        f"{crowded_rss / 1024:.1f} MiB"
    )
    print(
        f"  owner bound to a stopped unit (its cgroup, kernel/cgroups.py): {unit_jan:.3f} s without, "
        f"{unit_crowded:.3f} s with them ({unit_crowded / unit_jan:.2f}x)\n"
    )


def policy_text(owners: int) -> str:
    """One policy file of `owners` owners, each bound to a unit (issue 16.9's shape)."""
    tables = [
        f'[owners.o{i}]\nunit = "svc{i}.service"\n'
        f'keys = ["0x{0x61000000 + 16 * i:08x}-0x{0x61000000 + 16 * i + 15:08x}"]\n'
        'uid = 0\nmin_age = "1m"\n'
        for i in range(owners)
    ]
    return 'min_age = "10m"\n\n' + "\n".join(tables)


def policy_rows(tmp: Path) -> None:
    """`policy check` of one file with many owners against the same owners in 1 file each."""
    print("one policy file of N owners (policy check, whole process):")
    for n in (2000, 4000, 8000):
        one = tmp / f"policy-{n}.toml"
        one.write_text(policy_text(n))
        many = tmp / f"policy-{n}.d"
        many.mkdir(exist_ok=True)
        for i, table in enumerate(policy_text(n).split("\n\n")[1:]):
            (many / f"o{i:05d}.toml").write_text(table)
        check = [PY, "-m", "ipcjanitor", "-q", "--policy"]
        t_one = min(timed([*check, str(one), "policy", "check"]) for _ in range(REPEATS))
        t_many = min(timed([*check, str(many), "policy", "check"]) for _ in range(REPEATS))
        print(f"  {n:5d} owners  {t_one:7.3f} s in one file   {t_many:7.3f} s in {n} files")
    print()


def _stale_queues(n: int) -> None:
    def make() -> None:
        buf = ctypes.create_string_buffer(16)
        ctypes.c_long.from_buffer(buf).value = 1  # mtype: must be positive
        for i in range(n):
            q = libc.msgget(0x12000000 + i, IPC_CREAT | 0o600)
            assert q >= 0 and libc.msgsnd(q, buf, 8, 0) == 0
            assert libc.msgrcv(q, buf, 8, 0, 0) == 8

    in_dead_child(make)


def _big_stale_set(nsems: int) -> None:
    def make() -> None:
        sem = libc.semget(0x11000000, nsems, IPC_CREAT | 0o600)
        op = SemBuf(nsems - 1, 1, 0)
        assert sem >= 0 and libc.semop(sem, ctypes.byref(op), 1) == 0

    in_dead_child(make)


def removal_windows(policy: Path) -> tuple[float, float, int]:
    """The engine's own sweep (survey, remove_stale), in this process, with its two kernel
    steps timed: the longest time from the start of the look a batch was judged by (the read
    of the tasks for queues; the batch's re-read by id for a semaphore set) to the end of that
    batch's IPC_RMIDs. Returns (longest, mean, batches)."""
    from ipcjanitor import _sysvipc  # noqa: PLC0415
    from ipcjanitor.engine.remove import remove_stale  # noqa: PLC0415
    from ipcjanitor.engine.run import survey  # noqa: PLC0415
    from ipcjanitor.kernel.tasks import queue_waiters  # noqa: PLC0415
    from ipcjanitor.policy.load import load_policy  # noqa: PLC0415

    look = [0.0]
    windows: list[float] = []

    def waiters():  # type: ignore[no-untyped-def]
        look[0] = time.perf_counter()
        return queue_waiters()

    def recheck(kind, items):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = _sysvipc.recheck_rmid(kind, items)
        windows.append(time.perf_counter() - (look[0] if kind == 2 else start))
        return out

    decisions = survey(load_policy(str(policy)))
    done = list(remove_stale(decisions, waiters, recheck))
    assert all(d.verdict.value == "removed" for d in done), {d.verdict for d in done}
    return max(windows), sum(windows) / len(windows), len(windows)


def window_rows(tmp: Path) -> None:
    """How long before its IPC_RMID the last look at a queue's waiters, or at a big semaphore
    set's counts, was taken (issue 16: a waiter arriving in that window loses its object)."""
    policy = tmp / "window-policy.toml"
    policy.write_text(
        'pid_namespace_complete = true\nmin_age = "0s"\n'
        '[owners.bench]\nkeys = ["0x10000000-0x1fffffff"]\nkeep_queued_messages = false\n'
    )
    print("the window between the last look and IPC_RMID (the engine's sweep, timed inside):")
    queues = int(os.environ.get("BENCH_QUEUES", "32000"))
    for people in (0, 2000):
        session = crowd(people) if people else None
        try:
            rows = []
            for _ in range(REPEATS):
                _stale_queues(queues)
                rows.append(removal_windows(policy))
                assert count() == 0
        finally:
            if session is not None:
                end_crowd(session)
        longest, mean, batches = min(rows)
        print(
            f"  {queues} queues, {people} more processes: longest {longest * 1000:.2f} ms, "
            f"mean {mean * 1000:.2f} ms over {batches} batches (read of the tasks + removals)"
        )
    nsems = 32000
    Path("/proc/sys/kernel/sem").write_text(f"{nsems} 1024000000 500 32768")
    try:
        rows = []
        for _ in range(REPEATS):
            _big_stale_set(nsems)
            rows.append(removal_windows(policy))
        longest = min(r[0] for r in rows)
        print(
            f"  one set of {nsems} semaphores: {longest * 1000:.2f} ms from reading its first "
            "semaphore's counts to IPC_RMID\n"
        )
    finally:
        Path("/proc/sys/kernel/sem").write_text("250 1024000000 500 32768")


def _set_up() -> tuple[Path, Path]:
    """Inside the bench's namespaces: room for 64k objects, a scratch directory with the
    policy in it, and this mount namespace's own /run (root's run lock is /run/ipcjanitor)."""
    Path("/proc/sys/kernel/shmmni").write_text("32768")
    Path("/proc/sys/kernel/sem").write_text("250 1024000000 500 32768")
    tmp = Path(tempfile.mkdtemp())
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    return tmp, policy


def crowded_only() -> None:
    """The 64k clean, then the same with BENCH_CROWD more live processes (issue 20)."""
    tmp, policy = _set_up()
    n = int(os.environ.get("BENCH_OBJECTS", "64000"))
    jan = best(lambda: populate(n // 2, n // 2), janitor_cmd(policy))
    print(f"{n} objects: ipcjanitor clean {jan:.3f} s (best of {REPEATS})")
    crowded_rows(n, jan, policy, tmp)


def core_rows() -> None:
    """The two figures issue 17 must keep: the 64k clean and the no-owner hook against
    `python -c pass`, each best of BENCH_REPEATS (the hook: of BENCH_HOOK_RUNS, default 4x
    as many), wall and CPU."""
    _, policy = _set_up()
    n = int(os.environ.get("BENCH_OBJECTS", "64000"))
    print(f"tree {ROOT}; best of {REPEATS}; load {os.getloadavg()[0]:.1f}")
    runs = []
    for _ in range(REPEATS):
        populate(n // 2, n // 2)
        runs.append(timed_cpu(janitor_cmd(policy)))
        assert count() == 0, f"the clean left {count()} objects"
    wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"{n} objects: ipcjanitor clean {wall:.3f} s wall, {cpu:.3f} s CPU")
    hook = [str(Path(PY).parent / "ipcjanitor"), "--policy", str(policy), "hook", "--unit",
            "x.service"]  # fmt: skip
    bare = [PY, "-c", "pass"]
    runs_each = int(os.environ.get("BENCH_HOOK_RUNS", str(4 * REPEATS)))
    h, b = [], []
    for _ in range(runs_each):  # interleaved: a burst of load falls on both alike
        h.append(timed_cpu(hook))
        b.append(timed_cpu(bare))
    hw, hc = min(r[0] for r in h), min(r[1] for r in h)
    bw, bc = min(r[0] for r in b), min(r[1] for r in b)
    print(
        f"hook with nothing to do: {hw * 1000:.1f} ms wall, {hc * 1000:.1f} ms CPU; python -c "
        f"pass: {bw * 1000:.1f} ms wall, {bc * 1000:.1f} ms CPU; ratio {hw / bw:.2f}x wall, "
        f"{hc / bc:.2f}x CPU"
    )


def main_inside() -> None:
    tmp, policy = _set_up()
    print(f"machine: {os.cpu_count()} cpus, {os.uname().release}, python {sys.version.split()[0]}")
    print(
        f"best of {REPEATS}; every ipcjanitor run makes every check (proof of death, re-read by id)\n"
    )

    n = int(os.environ.get("BENCH_OBJECTS", "64000"))
    half = n // 2
    jan = best(lambda: populate(half, half), janitor_cmd(policy))
    rss = PEAK_RSS[str(janitor_cmd(policy))]
    floor = best(lambda: populate(half, half), ["sh", "-c", "ipcrm --all=shm; ipcrm --all=sem"])
    small = 2000
    recipe = best(
        lambda: populate(small // 2, small // 2),
        "ipcs -m | awk '/^0x/ {print $2}' | xargs -n1 ipcrm -m; "
        "ipcs -s | awk '/^0x/ {print $2}' | xargs -n1 ipcrm -s",
        shell=True,
    )
    kernel = best(lambda: populate(half, half), [PY, "-c", FLOOR])
    print(f"{n} objects ({half} shm + {half} sem sets, one dead creator):")
    print(f"  ipcjanitor clean           {jan:8.3f} s   {jan / n * 1e6:7.2f} us/object")
    print(f"  ipcrm --all=shm; --all=sem {floor:8.3f} s   {floor / n * 1e6:7.2f} us/object")
    print(
        f"  ipcs | awk | xargs ipcrm   {recipe / small * n:8.3f} s   {recipe / small * 1e6:7.2f} us/object"
        f"   (measured on {small}, scaled)"
    )
    print(
        f"  the checks' own syscalls     {kernel:8.3f} s   {kernel / n * 1e6:7.2f} us/object"
        "   (list + IPC_STAT/GETPID/GETNCNT/GETZCNT re-read + IPC_RMID, a bare Python loop)"
    )
    print(
        f"  ratio ipcjanitor / ipcrm --all: {jan / floor:.2f}x   checks' floor / ipcrm --all: "
        f"{kernel / floor:.2f}x   recipe / ipcjanitor: {recipe / small * n / jan:.1f}x"
    )
    print(
        f"  ratio ipcjanitor / the checks' floor: {jan / kernel:.2f}x (target <= 1.25x)   "
        f"peak RSS of the clean: {rss / 1024:.1f} MiB\n"
    )

    crowded_rows(n, jan, policy, tmp)
    window_rows(tmp)
    policy_rows(tmp)

    creators = int(os.environ.get("BENCH_CREATORS", "2000"))
    distinct = best(lambda: populate(half, half, creators), janitor_cmd(policy))
    print(
        f"{n} objects from {creators} distinct dead creators: ipcjanitor clean {distinct:.3f} s "
        f"({distinct / jan:.2f}x the one-creator run)"
    )
    print()

    print("scaling (shm + sem, half each):")
    for size in (1000, 4000, 16000, 64000):
        if size > n:
            break
        t = best(lambda size=size: populate(size // 2, size // 2), janitor_cmd(policy))
        print(f"  {size:6d} objects  {t:7.3f} s  {t / size * 1e6:6.2f} us/object")

    # as the ExecStopPost= drop-in runs it: the console script
    hook = [
        str(Path(PY).parent / "ipcjanitor"),
        "--policy",
        str(policy),
        "hook",
        "--unit",
        "x.service",
    ]
    bare = [PY, "-c", "pass"]
    th = min(timed(hook) for _ in range(10))
    tp = min(timed(bare) for _ in range(10))
    print(
        f"\nhook with nothing to do: {th * 1000:.1f} ms; python -c pass: {tp * 1000:.1f} ms; ratio {th / tp:.2f}x"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["policy"]:  # this row alone: it needs no namespace
        policy_rows(Path(tempfile.mkdtemp()))
        sys.exit(0)
    if os.environ.get("IPCJANITOR_BENCH_INSIDE") != "1":
        env = dict(os.environ, IPCJANITOR_BENCH_INSIDE="1", PYTHONPATH=str(ROOT))
        sys.exit(
            subprocess.run(
                [
                    "unshare",
                    "--ipc",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    PY,
                    __file__,
                    *sys.argv[1:],
                ],
                env=env,
                check=False,
            ).returncode
        )
    if sys.argv[1:] == ["window"]:  # this row alone (python bench/run.py window)
        Path("/proc/sys/kernel/msgmni").write_text("32000")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
        sys.path.insert(0, str(ROOT))
        window_rows(Path(tempfile.mkdtemp()))
        sys.exit(0)
    if sys.argv[1:] == ["core"]:  # the 64k clean and the no-owner hook (python bench/run.py core)
        core_rows()
        sys.exit(0)
    if sys.argv[1:] == ["crowded"]:  # the crowded rows alone (python bench/run.py crowded)
        crowded_only()
        sys.exit(0)
    main_inside()

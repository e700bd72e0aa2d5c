"""POSIX bench: `ipcjanitor clean` on /dev/shm against `fuser -m` and `lsof +D`.

Re-executes itself inside `unshare --ipc --mount --pid --fork --mount-proc` with a fresh
tmpfs on /dev/shm (the host's is never touched). Makes BENCH_POSIX_FILES files (default
10,000), half of them held open by BENCH_POSIX_PROCS live processes (default 2,000 `sleep`s,
each holding its share as extra fds), the other half stale, and times, best of
BENCH_REPEATS (default 3), each as a whole process:

- `ipcjanitor -q clean` (reads every process's maps and fds and /proc/locks once, decides
  every file, removes the stale half with every check of the contract), with its peak RSS;
- `fuser -m /dev/shm` (psmisc: lists the holders; decides and removes nothing);
- `lsof +D /dev/shm` (lists open files below the directory).

The stale half is made again before each clean run. BENCH_POSIX_PROFILE=FILE adds one
clean under cProfile, its stats written to FILE. BENCH_POSIX_BASELINE=DIR also times the
ipcjanitor of another checkout (DIR on PYTHONPATH), interleaved with this one's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = int(os.environ.get("BENCH_POSIX_FILES", "10000"))
PROCS = int(os.environ.get("BENCH_POSIX_PROCS", "2000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
ROOT = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds (user + system) of one run of cmd: on a
    loaded machine the CPU time is the steadier measure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return took, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def make_stale() -> None:
    for i in range(0, FILES, 2):
        (SHM / f"psm_{i}").write_bytes(b"")


def check(live: list[Path]) -> None:
    left = sum(1 for i in range(0, FILES, 2) if (SHM / f"psm_{i}").exists())
    kept = sum(1 for p in live if p.exists())
    if left or kept != len(live):
        raise SystemExit(f"clean left {left} stale files, kept {kept} of {len(live)} live")


def inside() -> None:
    if os.stat(SHM).st_dev == int(os.environ["BENCH_HOST_SHM_DEV"]):
        raise SystemExit("/dev/shm is the host's: refusing")
    policy = Path(tempfile.mkdtemp()) / "policy.toml"
    policy.write_text(
        'min_age = "0s"\npid_namespace_complete = true\n[owners.bench]\nnames = ["psm_*"]\n'
    )
    live = [SHM / f"psm_{i}" for i in range(1, FILES, 2)]
    for p in live:
        p.write_bytes(b"")
    make_stale()
    sleeps = []
    share = max(1, len(live) // PROCS)
    for n in range(PROCS):
        mine = live[n * share : (n + 1) * share] if n < PROCS - 1 else live[n * share :]
        fds = [os.open(p, os.O_RDONLY) for p in mine]
        sleeps.append(subprocess.Popen(["sleep", "3600"], pass_fds=fds))
        for fd in fds:
            os.close(fd)
    janitor = [sys.executable, "-m", "ipcjanitor", "-q", "--policy", str(policy), "clean"]
    rows: dict[str, list[tuple[float, int, float]]] = {"clean": [], "fuser": [], "lsof": []}
    # BENCH_POSIX_BASELINE=DIR: also time the ipcjanitor of another checkout (before/after,
    # interleaved in one namespace, so that the load of the machine hits both alike)
    runs = [("clean", None)]
    if os.environ.get("BENCH_POSIX_BASELINE"):
        rows["baseline"] = []
        runs.append(("baseline", dict(os.environ, PYTHONPATH=os.environ["BENCH_POSIX_BASELINE"])))
    for n in range(REPEATS):
        rows["fuser"].append(timed(["fuser", "-m", str(SHM)]))
        rows["lsof"].append(timed(["lsof", "+D", str(SHM)]))
        for row, env in runs[n % 2 :] + runs[: n % 2]:  # each first in turn
            make_stale()
            rows[row].append(timed(janitor, env))
            check(live)
    profile = os.environ.get("BENCH_POSIX_PROFILE")
    if profile:  # one more clean under cProfile, to see where its time goes
        make_stale()
        subprocess.run([sys.executable, "-m", "cProfile", "-o", profile, *janitor[1:]], check=True)
    for s in sleeps:
        s.kill()
        s.wait()
    best = {k: min(v) for k, v in rows.items()}
    cpu = {k: min(r[2] for r in v) for k, v in rows.items()}
    print(
        f"{FILES} files in /dev/shm ({FILES // 2} stale), {PROCS} live processes holding the rest:"
    )
    for name, label in [("clean", "ipcjanitor clean"), ("baseline", "clean (baseline)"),
                        ("fuser", "fuser -m /dev/shm"), ("lsof", "lsof +D /dev/shm")]:  # fmt: skip
        if name not in best:
            continue
        took, rss, _ = best[name]
        print(f"  {label:<20} {took:7.3f} s   {took / best['fuser'][0]:5.2f}x fuser   "
              f"cpu {cpu[name]:6.3f} s {cpu[name] / cpu['fuser']:5.2f}x   "
              f"peak RSS {rss / 1024:6.1f} MiB")  # fmt: skip


def main() -> None:
    if os.environ.get("BENCH_POSIX_INSIDE"):
        inside()
        return
    if shutil.which("fuser") is None or shutil.which("lsof") is None:
        raise SystemExit("needs psmisc (fuser) and lsof")
    # as installed: byte-compiled (PYTHONDONTWRITEBYTECODE would make every run compile)
    baseline = os.environ.get("BENCH_POSIX_BASELINE")
    trees = [ROOT, *([Path(baseline)] if baseline else [])]
    for tree in trees:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(tree / "ipcjanitor")], check=True
        )
    env = dict(os.environ, BENCH_POSIX_INSIDE="1", BENCH_HOST_SHM_DEV=str(os.stat(SHM).st_dev),
               PYTHONPATH=str(ROOT))  # fmt: skip
    subprocess.run(
        ["unshare", "--ipc", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c",
         'mount -t tmpfs -o size=256m tmpfs /dev/shm && exec "$@"', "sh",
         sys.executable, __file__],
        env=env, check=True,
    )  # fmt: skip


if __name__ == "__main__":
    main()

"""Start one schedule in fresh private namespaces and bring its result back.

IPC, pid (with its own /proc), mount: a private tmpfs on /run (the janitor's lock and state,
the harness's sockets and policy), a fresh tmpfs on /dev/shm and the new IPC namespace's
mqueue on /dev/mqueue. Nothing of the host's IPC is ever touched; when the schedule's pid 1
exits, the kernel ends every process it left.

`python -m tests.adversary.outside --seeds 1-20 --steps 120` runs schedules from the shell;
`--minutes N` keeps drawing new seeds for N minutes (make soak); `--shrink FILE` cuts a
failing schedule down to fewer steps that still fail.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
MOUNTS = (
    "mount -t tmpfs -o mode=0755 tmpfs /run && "
    "mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm && "
    "mount -t mqueue mqueue /dev/mqueue && "
)


def can_run() -> str | None:
    """Why schedules cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (unshare --ipc --pid --mount)"
    for tool in ("unshare", "faketime"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(["unshare", "--ipc", "--pid", "--fork", "--mount-proc", "--mount",
                            "--time", "true"], check=False)  # fmt: skip
    return None if probe.returncode == 0 else "unshare --ipc --pid --mount --time failed"


def schedule(
    seed: int = 0, steps: int = 100, replay: list[dict[str, Any]] | None = None,
    timeout: float = 600, brk: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run one schedule (drawn from seed, or the given steps) in its own namespaces; brk
    names a deliberate defect of the janitor's (broken.py) to run against instead."""
    args = ["--seed", str(seed), "--steps", str(steps)]
    with tempfile.TemporaryDirectory() as tmp:
        if replay is not None:
            path = Path(tmp) / "steps.json"
            path.write_text(json.dumps({"steps": replay}))
            args += ["--replay", str(path)]
        env = dict(os.environ, PYTHONPATH=str(ROOT),
                   ADVERSARY_HOST_SHM_DEV=str(os.stat("/dev/shm").st_dev))  # fmt: skip
        env.pop("ADVERSARY_BREAK", None)
        if brk is not None:
            env["ADVERSARY_BREAK"] = brk
        proc = subprocess.run(
            ["unshare", "--ipc", "--pid", "--fork", "--mount-proc", "--mount", "sh", "-c",
             MOUNTS + 'exec "$@"', "sh", sys.executable, "-m", "tests.adversary.run", *args],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False,
        )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"schedule {seed} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def failed(result: dict[str, Any]) -> bool:
    return bool(result["violations"] or result["model_errors"] or result["harness_error"])


def summary(results: list[dict[str, Any]]) -> str:
    steps = sum(r["executed"] for r in results)
    violations = sum(len(r["violations"]) for r in results)
    model = sum(len(r["model_errors"]) + bool(r["harness_error"]) for r in results)
    runs = [
        (k, v)
        for r in results
        for k, v in r["stats"].items()
        if k.startswith(("clean", "scan", "hook")) and ":" not in k
    ]  # not "hook: removed"
    hooks = sum(v for k, v in runs if k.startswith("hook"))
    return (f"adversary: {len(results)} schedules, {steps} steps, {sum(v for _, v in runs)} "
            f"janitor runs ({hooks} hooks), {violations} violations, {model} harness/model errors")  # fmt: skip


def shrink(steps: list[dict[str, Any]], still_fails: Any) -> list[dict[str, Any]]:
    """ddmin over the steps: drop chunks while the schedule still fails."""
    n = 2
    while len(steps) >= 2:
        size = max(1, len(steps) // n)
        for i in range(0, len(steps), size):
            trial = steps[:i] + steps[i + size :]
            if trial and still_fails(trial):
                steps, n = trial, max(n - 1, 2)
                break
        else:
            if size == 1:
                return steps
            n = min(len(steps), n * 2)
    return steps


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1-10")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--minutes", type=float, help="draw new seeds for this long (soak)")
    parser.add_argument("--jobs", type=int, default=1, help="schedules at once")
    parser.add_argument("--shrink", type=Path)
    parser.add_argument("--keep", type=Path, default=ROOT / "build" / "adversary")
    args = parser.parse_args()
    if args.shrink:
        _shrink_file(args.shrink)
        return
    end = time.monotonic() + 60 * (args.minutes or 0)
    fixed = iter(_seeds(args.seeds))

    def seeds() -> Iterator[int]:
        while args.minutes is None or time.monotonic() < end:
            seed = next(fixed, None) if args.minutes is None else random.randrange(2**31)
            if seed is None:
                return
            yield seed

    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        running: set[Future[dict[str, Any]]] = set()
        for seed in seeds():  # at most `jobs` at once: the clock decides when to stop drawing
            running.add(pool.submit(schedule, seed, args.steps))
            if len(running) >= args.jobs:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                results += _collect(done, args.keep)
        results += _collect(wait(running).done, args.keep)
    print(summary(results))
    sys.exit(1 if any(failed(r) for r in results) else 0)


def _collect(done: set[Future[dict[str, Any]]], keep: Path) -> list[dict[str, Any]]:
    out = [f.result() for f in done]
    for r in out:
        _report(r, keep)
    return out


def _report(r: dict[str, Any], keep: Path) -> None:
    line = f"seed {r['seed']}: {r['executed']} steps, {len(r['violations'])} violations"
    if failed(r):
        keep.mkdir(parents=True, exist_ok=True)
        path = keep / f"seed-{r['seed']}.json"
        path.write_text(json.dumps(r, indent=1))
        whats = sorted({v["what"] for v in r["violations"]})
        line += f" {whats}, {len(r['model_errors'])} model errors, kept in {path}"
        if r["harness_error"]:
            line += f"\n  harness: {r['harness_error'].splitlines()[0]}"
    print(line, flush=True)


def _shrink_file(path: Path) -> None:
    doc = json.loads(path.read_text())
    what = {v["what"] for v in doc["violations"]}

    def still_fails(trial: list[dict[str, Any]]) -> bool:
        r = schedule(doc["seed"], replay=trial)
        return bool({v["what"] for v in r["violations"]} & what)

    small = shrink(doc["steps"], still_fails)
    out = path.with_name(path.stem + "-min.json")
    final = schedule(doc["seed"], replay=small)
    out.write_text(json.dumps(final, indent=1))
    print(f"{len(doc['steps'])} -> {len(small)} steps: {out}")


if __name__ == "__main__":
    main()

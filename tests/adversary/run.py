"""One schedule, run INSIDE `unshare --ipc --pid --fork --mount-proc --mount` (outside.py),
as the namespace's pid 1, with private tmpfs on /run and /dev/shm and a fresh mqueue.

`python -m tests.adversary.run --seed N --steps M` draws M steps from the seed;
`--replay FILE` runs the steps a JSON file lists. Either prints one JSON line last: the
steps executed, counters, violations, model errors and what the final clean kept.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from tests.adversary import kernel, ops, oracle
from tests.adversary.schedule import Generator
from tests.adversary.world import HarnessError, World

RUNDIR = Path("/run/adversary")


def _refuse_the_host() -> None:
    """Never make or remove anything in the host's /dev/shm, /dev/mqueue or IPC namespace."""
    host_shm = os.environ.get("ADVERSARY_HOST_SHM_DEV")
    if os.getpid() != 1 or host_shm is None or str(os.stat("/dev/shm").st_dev) == host_shm:
        raise SystemExit("tests.adversary.run runs only as pid 1 of outside.py's namespaces")
    if "mqueue" not in Path("/proc/self/mounts").read_text():
        raise SystemExit("no private mqueue on /dev/mqueue")


class Runner:
    def __init__(self) -> None:
        RUNDIR.mkdir(mode=0o755, exist_ok=True)
        self.world = World(RUNDIR)
        self.window: oracle.Window | None = None
        self.done: list[ops.Step] = []
        self.skipped = 0

    def execute(self, step: ops.Step) -> None:
        world = self.world
        world.step_no = len(self.done) + 1  # violations name the step by its place in "steps"
        op = step["op"]
        ran = ops.STEPS[op](world, step) if op in ops.STEPS else self._janitor(step)
        if not ran:
            self.skipped += 1
            return
        self.done.append(step)
        world.settle(lambda *a: ops.finish(world, *a))
        if self.window is not None and op != "clean_start":
            oracle.look(world, self.window)
        self._cross_check()

    def _janitor(self, step: ops.Step) -> bool:
        op, world = step["op"], self.world
        if op == "sleep":
            time.sleep(step["s"])
        elif op == "clean_join":
            if self.window is None:
                return False
            oracle.join(world, self.window)
            self.window = None
        elif self.window is not None:
            return False  # one clean at a time: the second would wait for the run lock
        elif op == "clean_start":
            self.window = oracle.begin(world)
        else:
            oracle.run(world, op, _clock(step.get("clock")))
        return True

    def _cross_check(self) -> None:
        """The model against the kernel: attachments and semaphore waiters."""
        world = self.world
        shm = kernel.shm_table()
        for o in world.objs.values():
            if o.gone is not None or o.id is None:
                continue
            if o.kind == "shm" and o.id in shm:
                mine = sum(how == "attached" and lab == o.label
                           for w in world.live() for how, lab in w.handles.values())  # fmt: skip
                if shm[o.id].nattch != mine:
                    world.model_error(f"{o.describe()}: nattch {shm[o.id].nattch}, model {mine}")
            elif o.kind == "sem":
                st = kernel.sem_state(o.id, o.nsems)
                mine = sum(w.pending is not None and w.pending.obj == o.label for w in world.live())
                if st is not None and st.ncnt + st.zcnt != mine:
                    world.model_error(f"{o.describe()}: {st.ncnt + st.zcnt} waiting, model {mine}")

    def finish(self) -> list[dict[str, Any]]:
        if self.window is not None:
            self.execute({"op": "clean_join"})
        return oracle.final(self.world)


def _clock(clock: dict[str, int] | None) -> dict[str, int] | None:
    """A time namespace's offsets, kept inside what the kernel allows (no clock below 0)."""
    if not clock or "wall" in clock:
        return clock
    up = int(time.clock_gettime(time.CLOCK_MONOTONIC)) - 5
    return {k: max(v, -up) for k, v in clock.items()}


def run(steps: list[ops.Step] | None, seed: int, count: int) -> dict[str, Any]:
    start = time.monotonic()
    runner = Runner()
    gen = Generator(seed)
    error = None
    kept: list[dict[str, Any]] = []
    try:
        for i in range(len(steps) if steps is not None else count):
            runner.execute(steps[i] if steps is not None else gen.next(runner.world))
        kept = runner.finish()
    except (HarnessError, OSError, TimeoutError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-1500:]}"
    world = runner.world
    return {"seed": seed, "steps": runner.done, "executed": len(runner.done),
            "skipped": runner.skipped, "stats": world.stats, "violations": world.violations,
            "model_errors": world.model_errors, "harness_error": error, "kept": kept,
            "seconds": round(time.monotonic() - start, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--replay", type=Path)
    args = parser.parse_args()
    _refuse_the_host()
    steps = json.loads(args.replay.read_text())["steps"] if args.replay else None
    print(json.dumps(run(steps, args.seed, args.steps)), flush=True)


if __name__ == "__main__":
    main()

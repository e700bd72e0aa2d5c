"""The attacker built into the suite: random schedules of real processes against ipcjanitor.

Each schedule runs in fresh private IPC, pid and mount namespaces (outside.py): up to six
worker processes make, attach, map, open, operate on, block on, fork, exit, get SIGKILLed,
and are born again with a dead one's pid, while ipcjanitor `clean`, `scan` and `hook` (for
the owner bound to a unit, oracle.UNIT) run between steps, concurrently with them, under a stepped wall clock and in time namespaces of their
own. After every step: nothing a live process holds was removed or judged stale, no live
process got an IPC error on what it held, nothing unclaimed was touched, nothing vanished;
at the end, with every worker gone, one clean leaves nothing dead and claimed.

Under CI=true the seeds are a fixed list (ADVERSARY_SEEDS, default 1-20), run
ADVERSARY_JOBS (2) at a time: about 1.5 minutes on two cores; otherwise twenty new seeds
each run. A failing schedule is written
to build/adversary/seed-N.json; `python -m tests.adversary.outside --shrink FILE` cuts it
down. `make soak` runs new seeds for SOAK_MINUTES.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from tests.adversary import outside
from tests.conftest import UNDER_CI

WHY_NOT = outside.can_run()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.adversary,
    pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT)),
]
HERE = Path(__file__).parent
STEPS = int(os.environ.get("ADVERSARY_STEPS", "120"))
JOBS = int(os.environ.get("ADVERSARY_JOBS", "2"))


def _seeds() -> list[int]:
    text = os.environ.get("ADVERSARY_SEEDS")
    if text:
        return [s for part in text.split(",") for s in outside._seeds(part)]
    if UNDER_CI:
        return list(range(1, 21))
    return [random.randrange(2**31) for _ in range(20)]


def _explain(r: dict[str, Any]) -> str:
    keep = outside.ROOT / "build" / "adversary"
    keep.mkdir(parents=True, exist_ok=True)
    path = keep / f"seed-{r['seed']}.json"
    path.write_text(json.dumps(r, indent=1))
    lines = [f"schedule of seed {r['seed']} ({r['executed']} steps) failed; all of it: {path}",
             f"replay: python -m tests.adversary.outside --shrink {path}"]  # fmt: skip
    lines += [json.dumps(v) for v in r["violations"]]
    lines += r["model_errors"][:10]
    if r["harness_error"]:
        lines.append(r["harness_error"])
    return "\n".join(lines)


@pytest.fixture(scope="session")
def running(request: pytest.FixtureRequest) -> Iterator[dict[int, Future[dict[str, Any]]]]:
    """Every selected seed's schedule, JOBS at a time from the first test on (mostly waits:
    for workers to sleep, for the janitor's runs; 2 at once take half the time on 2 cores)."""
    seeds = [cast(int, item.callspec.params["seed"]) for item in request.session.items
             if isinstance(item, pytest.Function)
             and item.originalname == "test_random_schedule_keeps_every_promise"]  # fmt: skip
    pool = ThreadPoolExecutor(JOBS)
    try:
        yield {seed: pool.submit(outside.schedule, seed, STEPS) for seed in seeds}
    finally:
        pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("seed", _seeds())
def test_random_schedule_keeps_every_promise(
    seed: int, results: list[dict[str, Any]], running: dict[int, Future[dict[str, Any]]]
) -> None:
    r = running[seed].result()
    results.append(r)
    assert not outside.failed(r), _explain(r)
    assert r["executed"] > STEPS // 2, r["skipped"]

"""The attacker's unit variant (units.py): hooked units under a contained real systemd,
started, stopped and SIGKILLed at random, with `clean`, `scan` and `hook` between.

Under CI=true the seeds are fixed (ADVERSARY_UNIT_SEEDS, default 1-2, ADVERSARY_UNIT_STEPS
steps each: about a minute, two systemd boots); otherwise two new seeds each run. `make
soak` runs new seeds for SOAK_MINUTES. A failing schedule is kept in build/adversary/.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pytest

from tests.adversary import units
from tests.adversary.test_adversary import WHY_NOT
from tests.conftest import UNDER_CI
from tests.e2e.container import ROOT, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.adversary,
    pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT)),
    pytest.mark.skipif(available() is not None, reason=str(available())),
]
STEPS = int(os.environ.get("ADVERSARY_UNIT_STEPS", "30"))


def _seeds() -> list[int]:
    text = os.environ.get("ADVERSARY_UNIT_SEEDS")
    if text:
        lo, _, hi = text.partition("-")
        return list(range(int(lo), int(hi or lo) + 1))
    return [1, 2] if UNDER_CI else [random.randrange(2**31) for _ in range(2)]


def _explain(r: dict[str, Any]) -> str:
    keep = ROOT / "build" / "adversary"
    keep.mkdir(parents=True, exist_ok=True)
    path = keep / f"units-seed-{r['seed']}.json"
    path.write_text(json.dumps(r, indent=1))
    return "\n".join([f"units schedule of seed {r['seed']} failed; all of it: {path}",
                      *(json.dumps(v) for v in r["violations"]), str(r["harness_error"])])  # fmt: skip


@pytest.mark.parametrize("seed", _seeds())
def test_units_started_stopped_and_killed_keep_every_promise(seed: int) -> None:
    r = units.schedule(seed, STEPS)
    print(units.summary([r]), r["stats"])
    assert not r["violations"] and not r["harness_error"], _explain(r)
    assert r["stats"].get("hooks run by systemd (ExecStopPost=)", 0) > 0, r["stats"]


# what only the hook can get wrong: a held segment of a stopped unit, at its ExecStopPost=
HELD_AFTER_STOP: list[dict[str, Any]] = [
    {"op": "start", "n": 1},
    {"op": "holder", "n": 1},
    {"op": "stop", "unit": "adv-app1.service"},
    {"op": "clean"},
]


def test_the_same_schedule_keeps_every_promise_with_the_real_janitor() -> None:
    r = units.schedule(0, 0, replay=HELD_AFTER_STOP)
    assert not r["violations"] and not r["harness_error"], _explain(r)


def test_a_broken_janitor_under_systemd_is_caught() -> None:
    """ignore-life (broken.py) in the installed janitor's place: the stopped unit's hook
    removes what a live holder outside the unit still has attached, mapped and open."""
    r = units.schedule(0, 0, replay=HELD_AFTER_STOP, brk="ignore-life")
    assert not r["harness_error"], r["harness_error"]
    found = {v["what"] for v in r["violations"]}
    assert {"a live process lost an object it held", "removed while held"} <= found, found

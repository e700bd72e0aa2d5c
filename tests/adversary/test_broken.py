"""The harness can fail: against a janitor with a defect patched in (broken.py), schedules
must report violations. A harness that stays green when the engine breaks is a defect."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversary import outside
from tests.adversary.test_adversary import WHY_NOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.adversary,
    pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT)),
]
SEEDS = (1, 2, 3)
STEPS = 60


def _violations(brk: str, steps: list[dict[str, Any]] | None = None) -> set[str]:
    found: set[str] = set()
    for seed in SEEDS if steps is None else (0,):
        r = outside.schedule(seed, STEPS, replay=steps, brk=brk)
        assert not r["harness_error"], r["harness_error"]
        found |= {v["what"] for v in r["violations"]}
    return found


@pytest.mark.parametrize("brk", ["ignore-life", "blind-holders"])
def test_random_schedules_catch_a_broken_janitor(brk: str) -> None:
    found = _violations(brk)
    assert found & {"removed while held", "judged stale while held"}, (brk, found)


def test_an_attached_segment_removed_is_caught() -> None:
    """The smallest case: one live attacher of a claimed segment; clean removes it anyway."""
    steps: list[dict[str, Any]] = [
        {"op": "spawn", "w": "w1"},
        {"op": "create", "w": "w1", "o": "o1", "kind": "shm", "claimed": True},
        {"op": "attach", "w": "w1", "o": "o1", "h": "h1"},
        {"op": "clean"},
        {"op": "touch", "w": "w1"},
    ]
    assert _violations("ignore-life", steps) == {"removed while held"}


def test_a_mapped_file_removed_is_caught() -> None:
    steps: list[dict[str, Any]] = [
        {"op": "spawn", "w": "w1"},
        {"op": "create", "w": "w1", "o": "o1", "kind": "posix-shm", "claimed": True, "h": "h1"},
        {"op": "attach", "w": "w1", "o": "o1", "h": "h2", "how": "map"},
        {"op": "release", "w": "w1", "h": "h1"},
        {"op": "clean"},
    ]
    assert _violations("blind-holders", steps) == {"removed while held"}


def test_the_hook_removing_a_held_segment_is_caught() -> None:
    """The unit's hook (`ipcjanitor hook`, its ExecStopPost=) after a stop: the unit is gone,
    its segment is still attached by a live process outside it."""
    steps: list[dict[str, Any]] = [
        {"op": "spawn", "w": "w1"},
        {"op": "spawn", "w": "w2"},
        {"op": "create", "w": "w1", "o": "o1", "kind": "shm", "claimed": True, "bound": True},
        {"op": "attach", "w": "w2", "o": "o1", "h": "h1"},
        {"op": "kill", "w": "w1"},
        {"op": "hook"},
        {"op": "touch", "w": "w2"},
    ]
    assert _violations("ignore-life", steps) == {"removed while held"}

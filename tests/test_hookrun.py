"""The hook's body: it decides from its own cgroup and asks no D-Bus (issue 20)."""

from __future__ import annotations

from typing import Any

import pytest

from ipcjanitor.engine import run as engine
from ipcjanitor.hook import run as hook
from ipcjanitor.hook.gate import HookCall
from ipcjanitor.policy.model import Owner, Policy
from ipcjanitor.systemd import bus

POLICY = Policy(owners=(Owner(name="leaky", key_ranges=((1, 2),), unit="leaky.service"),))


def test_the_hook_decides_from_its_own_cgroup_and_asks_no_bus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before issue 20 the hook forked a child to ask systemd over D-Bus (bus.Question) on
    every restart, and handed the engine a facts_hook closure; now its unit goes in as data."""
    asked: list[object] = []
    seen: dict[str, Any] = {}

    def no_bus(*args: object, **kwargs: object) -> None:
        asked.append(args)
        raise AssertionError("the hook asked D-Bus on the restart path")

    def clean(policy: Policy, scope: engine.Scope, journal: object, **kwargs: Any) -> Any:
        seen.update(kwargs, owners=scope.owners)
        return [], None

    monkeypatch.setattr(bus, "Question", no_bus)
    monkeypatch.setattr(hook, "_policy", lambda unit, explicit: POLICY)
    monkeypatch.setattr(engine, "clean", clean)
    monkeypatch.setenv("SERVICE_RESULT", "signal")
    call = HookCall("leaky.service", None, json=True, metrics=None, quiet=True)
    assert hook.run_hook(call) == 0
    assert asked == []
    assert seen["own_unit"] == "leaky.service" and seen["owners"] == frozenset({"leaky"})
    assert "facts_hook" not in seen and "pid_notes" not in seen


def test_stop_notes_say_what_the_environment_reports_and_what_decides() -> None:
    env = {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}
    said, decides = hook.stop_notes("leaky.service", env)
    assert said == (
        "leaky.service stopped: its environment (which the service sets) reports "
        'SERVICE_RESULT="signal" EXIT_CODE="killed" EXIT_STATUS="KILL"'
    )
    assert "leaky.service's own cgroup" in decides and "not asked" in decides


def test_the_engine_takes_facts_as_data() -> None:
    import inspect

    for f in (engine.survey, engine.clean):
        params = inspect.signature(f).parameters
        assert "facts_hook" not in params
        assert params["own_unit"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["pid_notes"].kind is inspect.Parameter.KEYWORD_ONLY

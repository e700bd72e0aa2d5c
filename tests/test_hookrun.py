"""The hook's body: asking systemd in a child process while the policy and engine load."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ipcjanitor.hook.run import Asking
from ipcjanitor.systemd import bus as systemd
from ipcjanitor.systemd.bus import UnitRun

RUN = UnitRun("leaky.service", 812, 1_700_000_100.5, "/system.slice/leaky.service", (812, 813))


def test_asking_in_a_child_answers_what_unit_run_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def unit_run(unit: str) -> tuple[UnitRun | None, str | None]:
        asked.append(unit)  # in the child: the parent's list stays empty
        return RUN if unit == "leaky.service" else None, None if unit == "leaky.service" else "no"

    monkeypatch.setattr(systemd, "unit_run_here", unit_run)
    assert Asking("leaky.service").answer() == (RUN, None)
    assert Asking("other.service").answer() == (None, "no")
    assert asked == []  # it was asked elsewhere: in the child


def test_a_bug_in_the_child_is_raised_not_taken_for_no_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    def changed(unit: str) -> tuple[UnitRun | None, str | None]:
        raise AttributeError("get_property")  # a pystemd API change

    monkeypatch.setattr(systemd, "unit_run_here", changed)
    with pytest.raises(RuntimeError, match="AttributeError: get_property"):
        Asking("leaky.service").answer()


def test_a_child_that_dies_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(unit: str) -> tuple[UnitRun | None, str | None]:
        os.kill(os.getpid(), signal.SIGKILL)  # the child's own pid
        raise AssertionError("unreachable")

    monkeypatch.setattr(systemd, "unit_run_here", dies)
    run, why = Asking("leaky.service").answer()
    assert run is None and why is not None and "killed by signal 9" in why


def test_a_cancelled_child_is_ended_and_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    def hangs(unit: str) -> tuple[UnitRun | None, str | None]:
        time.sleep(600)
        raise AssertionError("unreachable")

    monkeypatch.setattr(systemd, "unit_run_here", hangs)
    asking = Asking("leaky.service")
    child = asking._pid
    assert child is not None
    started = time.monotonic()
    asking.cancel()
    asking.cancel()  # twice is fine
    assert time.monotonic() - started < 60  # not the child's 600 s
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # reaped: no zombie left


def test_without_a_fork_it_asks_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    monkeypatch.setattr(systemd, "unit_run_here", lambda unit: (RUN, None))
    assert Asking("leaky.service").answer() == (RUN, None)


def test_a_bus_that_never_answers_is_no_answer_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGSTOPped dbus-daemon: sd-bus would wait ~90 s; the hook waits HOOK_BUS_DEADLINE."""
    from ipcjanitor.hook import run as hookrun

    def stalls(unit: str) -> tuple[UnitRun | None, str | None]:
        time.sleep(600)
        raise AssertionError("unreachable")

    monkeypatch.setattr(systemd, "unit_run_here", stalls)
    monkeypatch.setattr(hookrun, "HOOK_BUS_DEADLINE", 0.5)
    asking = Asking("leaky.service")
    child = asking._pid
    started = time.monotonic()
    run, why = asking.answer()
    waited = time.monotonic() - started
    assert run is None and why is not None and "within 0.5 s" in why
    assert 0.4 < waited < 5
    assert child is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # ended and reaped

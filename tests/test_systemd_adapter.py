"""The systemd adapter over a fake bus: the calls it makes, and which failures mean "no bus"."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import pytest
from pystemd.dbusexc import DBusTimeoutError
from pystemd.dbuslib import apply_signature

from ipcjanitor.clock import TimerState
from ipcjanitor.systemd import bus as systemd
from ipcjanitor.systemd.bus import MANAGER, MANAGER_PATH, SERVICE, TIMER, UNIT, Systemd

UNIT_PATH = b"/org/freedesktop/systemd1/unit/leaky_2eservice"
TIMER_PATH = b"/org/freedesktop/systemd1/unit/ipcjanitor_2dclock_2etimer"


class Reply(NamedTuple):
    body: Any


class FakeBus:
    """Answers like systemd's manager for one unit, leaky.service; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, ...]] = []
        self.properties = {
            (TIMER_PATH, UNIT, b"ActiveState"): b"active",
            (TIMER_PATH, UNIT, b"ActiveEnterTimestampMonotonic"): 3_000_000,
            (TIMER_PATH, TIMER, b"LastTriggerUSecMonotonic"): 3_100_000,
            (UNIT_PATH, SERVICE, b"MainPID"): 0,
        }

    def get_property(
        self, dest: bytes, path: bytes, iface: bytes, prop: bytes, rtype: bytes
    ) -> Any:
        assert dest == b"org.freedesktop.systemd1" and rtype in (b"u", b"t", b"s", b"i")
        self.calls.append((b"get", iface, prop))
        return self.properties[(path, iface, prop)]

    def call_method(
        self, dest: bytes, path: bytes, iface: bytes, method: bytes, args: Any
    ) -> Reply:
        self.calls.append((b"call", iface, method))
        assert (path, iface) == (MANAGER_PATH, MANAGER)
        if method == b"LoadUnit":
            if args == apply_signature(b"s", [b"ipcjanitor-clock.timer"]):
                return Reply(TIMER_PATH)
            assert args == apply_signature(b"s", [b"leaky.service"])
            return Reply(UNIT_PATH)
        if method == b"Reload":
            return Reply(None)
        raise AssertionError(method)


def test_the_clock_recorders_timer_in_seconds_of_the_monotonic_clock() -> None:
    got = Systemd(FakeBus(), apply_signature).timer_state("ipcjanitor-clock.timer")
    assert got == TimerState(active=True, since=3.0, last_trigger=3.1)
    bus = FakeBus()
    bus.properties[(TIMER_PATH, UNIT, b"ActiveState")] = b"inactive"  # stopped, or no such unit
    assert not Systemd(bus, apply_signature).timer_state("ipcjanitor-clock.timer").active


@contextmanager
def over(bus: Any) -> Iterator[tuple[Systemd | None, str | None]]:
    yield Systemd(bus, apply_signature), None


def test_a_dbus_failure_is_no_answer_but_a_bug_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    class TimingOut(FakeBus):
        def get_property(self, *args: Any) -> Any:
            raise DBusTimeoutError(-110, b"org.freedesktop.DBus.Error.Timeout")

    monkeypatch.setattr(systemd, "connect", lambda: over(TimingOut()))
    pid, why = systemd.ask(lambda sd: sd.main_pid("leaky.service"))
    assert pid is None and why is not None and "no answer from systemd over D-Bus" in why

    class Changed(FakeBus):  # a pystemd API change must surface, not read as "no bus"
        def get_property(self, *args: Any) -> Any:
            raise AttributeError("get_property")

    monkeypatch.setattr(systemd, "connect", lambda: over(Changed()))
    with pytest.raises(RuntimeError, match="AttributeError: get_property"):
        systemd.main_pid("leaky.service")  # asked in a child; the bug surfaces here
    with pytest.raises(AttributeError):
        systemd.ask_here(lambda sd: sd.main_pid("leaky.service"))


def test_without_a_bus_every_question_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def no_bus() -> Iterator[tuple[Systemd | None, str | None]]:
        yield None, "no answer from systemd over D-Bus ([err -2]: Could not open a bus)"

    monkeypatch.setattr(systemd, "connect", no_bus)
    assert systemd.daemon_reload() is not None
    assert systemd.main_pid("leaky.service") is None
    assert systemd.clock_timer() == (
        None,
        "no answer from systemd over D-Bus ([err -2]: Could not open a bus)",
    )
    monkeypatch.setattr(systemd, "connect", lambda: over(FakeBus()))
    assert systemd.daemon_reload() is None and systemd.main_pid("leaky.service") == 0


def test_connect_to_a_missing_bus_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    with systemd.connect() as (sd, why):
        assert sd is None and why is not None and "no answer from systemd" in why


DEFERRED = """
import sys
from ipcjanitor.systemd import bus as systemd
DBus, apply_signature, DBusBaseError = systemd._pystemd_bus()
import pystemd.dbuslib, pystemd.dbusexc
assert (DBus, apply_signature) == (pystemd.dbuslib.DBus, pystemd.dbuslib.apply_signature)
assert DBusBaseError is pystemd.dbusexc.DBusBaseError
heavy = ("lxml.etree", "pystemd.systemd1", "pystemd.base", "pprint", "inspect", "dataclasses")
print("loaded before:", sorted(m for m in heavy if m in sys.modules))
print("pformat:", pystemd.dbuslib.pformat({"b": [1] * 3, "a": 2}))  # the real one, on demand
import pprint
print("pprint is real:", hasattr(pprint, "PrettyPrinter"))
from pystemd import SDUnit  # a name of the package's own: its __init__ runs now, once
print("complete:", SDUnit is pystemd.systemd1.Unit, pystemd.dbuslib.DBus is DBus)
"""


def test_pystemd_bus_loads_only_the_bus_module() -> None:
    """The hook loads pystemd's bus module alone; anyone later still gets the whole package."""
    out = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True,
                         check=True, cwd="/", env={"PATH": "/usr/bin:/bin"}).stdout  # fmt: skip
    assert out == (
        "loaded before: []\n"
        "pformat: {'a': 2, 'b': [1, 1, 1]}\n"
        "pprint is real: True\n"
        "complete: True True\n"
    )


def test_a_pystemd_already_imported_is_taken_as_it_is() -> None:
    import pprint

    import pystemd
    import pystemd.dbuslib

    before = sys.modules["pystemd"]
    assert systemd._pystemd_bus()[0] is pystemd.dbuslib.DBus
    assert sys.modules["pystemd"] is before is pystemd and sys.modules["pprint"] is pprint


def test_every_question_has_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bus that accepts and never answers (a SIGSTOPped dbus-daemon) holds no one."""

    @contextmanager
    def stalled() -> Iterator[tuple[Systemd | None, str | None]]:
        time.sleep(600)
        yield None, "unreachable"

    monkeypatch.setattr(systemd, "connect", stalled)
    for question in (
        lambda: systemd.ask(lambda sd: sd.timer_state("x.timer"), deadline=0.3),
        lambda: systemd.ask(lambda sd: sd.main_pid("leaky.service"), deadline=0.3),
    ):
        started = time.monotonic()
        value, why = question()
        assert value is None and why is not None and "within 0.3 s" in why
        assert time.monotonic() - started < 5
    monkeypatch.setattr(systemd, "BUS_DEADLINE", 0.3)
    started = time.monotonic()
    assert systemd.clock_timer()[0] is None
    assert systemd.main_pid("leaky.service") is None
    assert time.monotonic() - started < 10


def test_a_record_answered_by_the_asking_child_comes_back_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """marshal takes no NamedTuple: each record an answer may be travels by name."""
    timer = TimerState(True, 12.5, 40.0)
    monkeypatch.setattr(systemd, "ask_here", lambda question: (timer, None))
    assert systemd.clock_timer() == (timer, None)

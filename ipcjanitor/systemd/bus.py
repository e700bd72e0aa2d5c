"""The only module that talks to systemd over D-Bus: one adapter over an injectable bus.

It calls pystemd's bus directly (DBus.get_property / call_method with known signatures), not
pystemd's SDObject classes: those introspect every object first (a round trip each, parsed
with lxml). A D-Bus failure (pystemd's DBusBaseError) or an OS error means "no answer from
systemd" and comes back as None with the reason: ipcjanitor then decides from /proc alone.
Anything else is a bug (say, a pystemd API change) and propagates; it never reads as "no bus".
"""

from __future__ import annotations

import marshal
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from ..clock import TIMER as CLOCK_TIMER
from ..clock import TimerState
from ..escape import safe_name

DESTINATION = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
SERVICE = b"org.freedesktop.systemd1.Service"
UNIT = b"org.freedesktop.systemd1.Unit"
TIMER = b"org.freedesktop.systemd1.Timer"

T = TypeVar("T")


class Bus(Protocol):
    """What ipcjanitor uses of pystemd.dbuslib.DBus (and what a test's fake bus provides)."""

    def get_property(
        self, destination: bytes, path: bytes, interface: bytes, prop: bytes, rtype: bytes, /
    ) -> Any: ...

    def call_method(
        self, destination: bytes, path: bytes, interface: bytes, method: bytes, args: Any, /
    ) -> Any: ...


UNTRUSTED_LIMIT = 64  # characters of a service-supplied value shown, escaped


def untrusted(text: str) -> str:
    """PURE: text a service supplied, quoted, escaped by the one rule (escape.py), at most
    UNTRUSTED_LIMIT characters of it: never read as a fact or a command."""
    inner = safe_name(text[:UNTRUSTED_LIMIT]).replace('"', "\\x22")  # the quote, unambiguous
    shown = f'"{inner}"'
    return shown + f"... ({len(text)} characters)" if len(text) > UNTRUSTED_LIMIT else shown


class StopInfo(NamedTuple):
    """How the service stopped, as its environment reports it.

    SERVICE_RESULT, EXIT_CODE and EXIT_STATUS are what systemd sets for ExecStopPost=, but
    the service's own Environment=/EnvironmentFile= override them: they are only what the
    service says, quoted and bounded, and never part of a reason. (The hook asks systemd
    nothing since issue 20: no verdict needs its record of the stop.)
    """

    result: str | None  # success, exit-code, signal, core-dump, timeout, ...
    exit_code: str | None  # exited, killed, dumped
    exit_status: str | None  # a number if exited, else a signal name (KILL)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StopInfo:
        e = os.environ if env is None else env
        return cls(e.get("SERVICE_RESULT"), e.get("EXIT_CODE"), e.get("EXIT_STATUS"))

    def describe(self) -> str:
        pairs = (
            ("SERVICE_RESULT", self.result),
            ("EXIT_CODE", self.exit_code),
            ("EXIT_STATUS", self.exit_status),
        )
        parts = [f"{k}={untrusted(v)}" for k, v in pairs if v is not None]
        said = " ".join(parts) or "nothing"
        return f"its environment (which the service sets) reports {said}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Systemd:
    """systemd's manager, over one bus connection."""

    def __init__(self, bus: Bus, signature: Callable[[bytes, list[Any]], Any]) -> None:
        self.bus = bus
        self._signature = signature  # pystemd.dbuslib.apply_signature

    def _call(self, path: bytes, interface: bytes, method: bytes, sig: bytes, *args: Any) -> Any:
        msg = self.bus.call_method(
            DESTINATION, path, interface, method, self._signature(sig, list(args))
        )
        return msg.body

    def _manager(self, prop: bytes, rtype: bytes) -> Any:
        return self.bus.get_property(DESTINATION, MANAGER_PATH, MANAGER, prop, rtype)

    def unit_path(self, unit: str) -> bytes:
        """The unit's object path (LoadUnit: also for a unit that is not running)."""
        return bytes(self._call(MANAGER_PATH, MANAGER, b"LoadUnit", b"s", unit.encode()))

    def main_pid(self, unit: str) -> int:
        """The service's current main pid; 0 when it has none."""
        path = self.unit_path(unit)
        return int(self.bus.get_property(DESTINATION, path, SERVICE, b"MainPID", b"u"))

    def reload(self) -> bool:
        """Reload the unit files; True once systemd has done it."""
        self._call(MANAGER_PATH, MANAGER, b"Reload", b"")
        return True

    def timer_state(self, unit: str) -> TimerState:
        """Whether the timer is active, since when and when it last fired (monotonic)."""
        path = self.unit_path(unit)
        state = _text(self.bus.get_property(DESTINATION, path, UNIT, b"ActiveState", b"s"))
        since = self.bus.get_property(
            DESTINATION, path, UNIT, b"ActiveEnterTimestampMonotonic", b"t"
        )
        fired = self.bus.get_property(DESTINATION, path, TIMER, b"LastTriggerUSecMonotonic", b"t")
        return TimerState(state == "active", int(since) / 1e6, int(fired) / 1e6)


def _pystemd_bus() -> tuple[Any, Callable[[bytes, list[Any]], Any], type[Exception]]:
    """pystemd's DBus, apply_signature and DBusBaseError, loading no more of pystemd than them.

    The one unusual import in ipcjanitor, for the hook's restart path (bench/README.md): a
    plain `import pystemd.dbuslib` costs a hook ~10 ms for code it never runs.

    - pystemd/__init__.py imports the Unit and Manager classes and, through them, lxml (6-7
      ms). When nothing has imported pystemd yet, its package module is made from its own
      spec and registered without running that __init__; the first access of a name the
      submodules did not set (`pystemd.systemd1`, `from pystemd import SDUnit`) runs it in
      that same module object (PEP 562 __getattr__), so later users see the whole package.
    - pystemd.dbuslib imports pformat from pprint (pprint -> dataclasses -> inspect, ast,
      dis: ~4.5 ms) for one error message. While it loads, when pprint is not loaded yet, a
      stand-in `pprint` module gives it a pformat that imports the real one when called;
      the stand-in is gone from sys.modules once dbuslib is loaded.

    Anything unexpected (no spec, not a package, already imported) takes the normal import.
    """
    if "pystemd" not in sys.modules:
        _register_without_init("pystemd")
    stand_in = None
    if "pprint" not in sys.modules:
        stand_in = sys.modules["pprint"] = _module("pprint", pformat=_pformat)
    try:
        from pystemd.dbuslib import DBus, apply_signature  # noqa: PLC0415
    finally:
        if stand_in is not None and sys.modules.get("pprint") is stand_in:
            del sys.modules["pprint"]
    from pystemd.dbusexc import DBusBaseError  # noqa: PLC0415

    return DBus, apply_signature, DBusBaseError


def _register_without_init(name: str) -> None:
    import importlib.util  # noqa: PLC0415

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(attribute: str) -> Any:
        del vars(package)["__getattr__"]  # exactly once
        loader.exec_module(package)  # the package's own __init__, in this module object
        return getattr(package, attribute)

    vars(package)["__getattr__"] = complete
    sys.modules[name] = package


def _module(name: str, **attributes: Any) -> Any:
    import types  # noqa: PLC0415

    module = types.ModuleType(name)
    vars(module).update(attributes)
    return module


def _pformat(*args: Any, **kwargs: Any) -> str:
    """pprint.pformat, imported when first called (see _pystemd_bus)."""
    import pprint  # noqa: PLC0415

    return pprint.pformat(*args, **kwargs)


@contextmanager
def connect() -> Iterator[tuple[Systemd | None, str | None]]:
    """(adapter, None) over the system bus, or (None, why) when there is no answer."""
    try:
        DBus, apply_signature, DBusBaseError = _pystemd_bus()  # lazy: scan never loads it
    except ImportError as exc:
        yield None, f"pystemd is not importable ({exc})"
        return
    try:
        bus = DBus()
        bus.open()
    except (DBusBaseError, OSError) as exc:
        yield None, f"no answer from systemd over D-Bus ({exc})"
        return
    try:
        yield Systemd(bus, apply_signature), None
    finally:
        bus.close()


BUS_DEADLINE = 5.0  # seconds: a question systemd has not answered by then gets no answer
RELOAD_DEADLINE = 30.0  # a daemon-reload of a large system can take a while; still bounded


def ask_here(question: Callable[[Systemd], T]) -> tuple[T | None, str | None]:
    """One question to systemd, in this process: (answer, None), or (None, why) without an
    answer. No deadline but sd-bus's own (its authentication waits up to 90 s on a stopped
    dbus-daemon): call it through Question, which gives it one."""
    with connect() as (sd, why):
        if sd is None:
            return None, why
        from pystemd.dbusexc import DBusBaseError  # noqa: PLC0415

        try:
            return question(sd), None
        except (DBusBaseError, OSError) as exc:
            return None, f"no answer from systemd over D-Bus ({exc})"


class Question(Generic[T]):
    """A question to systemd asked by a child process, answered within a deadline.

    sd-bus waits up to 90 s for a dbus-daemon that accepted the connection but does not
    answer (SIGSTOPped, swapping, wedged), and 25 s for each method call: in a hook that is
    a failed stop (TimeoutStopSec=). The child asks (`asking`: what ask_here returns) and
    sends the answer back through a pipe (marshal: plain data, no code); answer() waits for
    it until `deadline` seconds after the question was put, then ends the child (ours, by
    its pid) and says there was no answer. A bug in the child (not a D-Bus failure) is
    raised in the parent. Fork only where no other thread runs; a process that cannot fork
    asks in itself at answer(), with sd-bus's own timeouts.
    """

    def __init__(self, asking: Callable[[], tuple[T | None, str | None]]) -> None:
        self._asking = asking
        self._pid: int | None = None
        self._fd: int | None = None
        self._put = time.monotonic()
        try:
            read_end, write_end = os.pipe()
            pid = os.fork()
        except OSError:  # EAGAIN, ENOMEM: ask in this process, later
            return
        if pid == 0:  # the child: ask, answer, leave without running any of the parent's exits
            status = 0
            try:
                os.close(read_end)
                _write_all(write_end, marshal.dumps(_plain(asking)))
            except BaseException:  # whatever it is, the parent reads no answer and says so
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        self._pid, self._fd = pid, read_end

    def answer(self, deadline: float | None = None) -> tuple[T | None, str | None]:
        """What `asking` returned (or raised), or (None, why) past the deadline (seconds
        from the question on; BUS_DEADLINE unless given)."""
        deadline = BUS_DEADLINE if deadline is None else deadline
        if self._fd is None:
            return self._asking()
        data = _read_until(self._fd, self._put + deadline)
        if data is None:
            self.cancel()
            return None, (
                f"no answer from systemd within {deadline:g} s (is D-Bus stalled?); "
                "nothing waited longer for it"
            )
        ended = self._reap()
        if not data:
            return None, f"no answer from systemd: the process asking it ended ({ended})"
        what, value, why = marshal.loads(data)
        if what == "bug":
            raise RuntimeError(f"asking systemd: {value}")
        record = _RECORDS.get(what)
        answer: Any = record(*value) if record is not None else value
        return answer, why

    def cancel(self) -> None:
        """Not needed (or no longer): end the child, ours by its pid, and reap it."""
        if self._pid is not None:
            import signal  # noqa: PLC0415  (not before the fork: it builds enums)

            os.kill(self._pid, signal.SIGKILL)
            self._reap()

    def _reap(self) -> str:
        pid, fd = self._pid, self._fd
        self._pid = self._fd = None
        if fd is not None:
            os.close(fd)
        if pid is None:
            return "already reaped"
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"


# The records an answer may be, sent as plain tuples (marshal takes no NamedTuple) by name
_RECORDS: dict[str, Any] = {"timer": TimerState}


def _plain(asking: Callable[[], tuple[Any, str | None]]) -> tuple[str, Any, str | None]:
    """What `asking` gave, as marshal-able data: (a record's name or "value",
    answer, why) or ("bug", ...)."""
    try:
        value, why = asking()
    except Exception as exc:  # a bug, not "no bus": the parent raises it
        return "bug", f"{type(exc).__name__}: {exc}", None
    for name, record in _RECORDS.items():
        if isinstance(value, record):
            return name, tuple(value), why
    return "value", value, why


def _read_until(fd: int, until: float) -> bytes | None:
    """Everything the child writes before it closes the pipe; None if that is after `until`."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    while True:
        left = until - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


def ask(
    question: Callable[[Systemd], T], deadline: float | None = None
) -> tuple[T | None, str | None]:
    """One question to systemd, within `deadline`: (answer, None), or (None, why)."""
    return Question(lambda: ask_here(question)).answer(deadline)


def daemon_reload() -> str | None:
    """Reload systemd's unit files; None on success, else why not."""
    done, why = ask(Systemd.reload, RELOAD_DEADLINE)
    return None if done else why


def main_pid(unit: str) -> int | None:
    """The unit's current main pid (0: none), or None without an answer from systemd."""
    return ask(lambda sd: sd.main_pid(unit))[0]


def clock_timer() -> tuple[TimerState | None, str | None]:
    """What systemd says of the recorder's timer, ipcjanitor-clock.timer, or (None, why)."""
    return ask(lambda sd: sd.timer_state(CLOCK_TIMER))

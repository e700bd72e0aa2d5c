"""The only module that talks to systemd over D-Bus (through pystemd, imported lazily).

Everything here degrades to None/False without a bus: ipcjanitor decides from /proc alone.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple


class UnitRun(NamedTuple):
    """What systemd says about a unit's last (or current) run."""

    unit: str
    active_state: str
    main_pid: int  # ExecMainPID: kept after the process exits
    main_start: float | None  # ExecMainStartTimestamp, epoch seconds
    control_group: str
    remaining: tuple[int, ...]  # processes still in the unit's cgroup


class StopInfo(NamedTuple):
    """How the service stopped, from the environment systemd gives ExecStopPost= commands."""

    result: str | None  # SERVICE_RESULT: success, exit-code, signal, core-dump, timeout, ...
    exit_code: str | None  # EXIT_CODE: exited, killed, dumped
    exit_status: str | None  # EXIT_STATUS: a number if exited, else a signal name (KILL)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StopInfo:
        e = os.environ if env is None else env
        return cls(e.get("SERVICE_RESULT"), e.get("EXIT_CODE"), e.get("EXIT_STATUS"))

    def how(self) -> str | None:
        """'killed by SIGKILL', 'exited with status 3', ... or None when systemd said nothing."""
        if self.exit_code == "killed" and self.exit_status:
            return f"killed by SIG{self.exit_status}"
        if self.exit_code == "dumped" and self.exit_status:
            return f"dumped core on SIG{self.exit_status}"
        if self.exit_code == "exited" and self.exit_status is not None:
            return f"exited with status {self.exit_status}"
        return None

    def describe(self) -> str:
        pairs = (
            ("SERVICE_RESULT", self.result),
            ("EXIT_CODE", self.exit_code),
            ("EXIT_STATUS", self.exit_status),
        )
        parts = [f"{k}={v}" for k, v in pairs if v]
        return " ".join(parts) or "no stop information in the environment"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def unit_run(unit: str) -> tuple[UnitRun | None, str | None]:
    """Ask systemd about `unit`; (None, why) when there is no bus or no such unit."""
    try:
        from pystemd.dbuslib import DBus  # noqa: PLC0415  (lazy: scan/clean never load it)
        from pystemd.systemd1 import Manager, Unit  # noqa: PLC0415
    except ImportError as exc:
        return None, f"pystemd is not importable ({exc})"
    try:
        with DBus() as bus:
            u = Unit(unit.encode(), bus=bus)
            u.load()
            service = u._interfaces.get("org.freedesktop.systemd1.Service")
            main_pid = int(service.ExecMainPID) if service is not None else 0
            start_us = int(service.ExecMainStartTimestamp) if service is not None else 0
            cgroup = _text(service.ControlGroup) if service is not None else ""
            manager = Manager(bus=bus)
            manager.load()
            try:
                procs = manager.Manager.GetUnitProcesses(unit.encode())
            except Exception:  # an inactive unit has no processes to list
                procs = []
            return (
                UnitRun(
                    unit=unit,
                    active_state=_text(u.Unit.ActiveState),
                    main_pid=main_pid,
                    main_start=start_us / 1e6 if start_us else None,
                    control_group=cgroup,
                    remaining=tuple(int(p[1]) for p in procs),
                ),
                None,
            )
    except Exception as exc:  # any bus failure: decide from /proc alone
        return None, f"no answer from systemd over D-Bus ({exc})"


def daemon_reload() -> str | None:
    """Reload systemd's unit files; None on success, else why not."""
    try:
        from pystemd.dbuslib import DBus  # noqa: PLC0415
        from pystemd.systemd1 import Manager  # noqa: PLC0415
    except ImportError as exc:
        return f"pystemd is not importable ({exc})"
    try:
        with DBus() as bus:
            manager = Manager(bus=bus)
            manager.load()
            manager.Manager.Reload()
    except Exception as exc:
        return f"no answer from systemd over D-Bus ({exc})"
    return None


def main_pid(unit: str) -> int | None:
    """The unit's current main pid (0: none), or None without an answer from systemd."""
    try:
        from pystemd.dbuslib import DBus  # noqa: PLC0415
        from pystemd.systemd1 import Unit  # noqa: PLC0415
    except ImportError:
        return None
    try:
        with DBus() as bus:
            u = Unit(unit.encode(), bus=bus)
            u.load()
            service = u._interfaces.get("org.freedesktop.systemd1.Service")
            return int(service.MainPID) if service is not None else None
    except Exception:
        return None


def boot_clock_offset() -> float | None:
    """Wall minus monotonic clock when userspace started, as systemd recorded it at boot
    (UserspaceTimestamp, UserspaceTimestampMonotonic); None without an answer."""
    try:
        from pystemd.dbuslib import DBus  # noqa: PLC0415
        from pystemd.systemd1 import Manager  # noqa: PLC0415
    except ImportError:
        return None
    try:
        with DBus() as bus:
            manager = Manager(bus=bus)
            manager.load()
            wall = int(manager.Manager.UserspaceTimestamp)
            mono = int(manager.Manager.UserspaceTimestampMonotonic)
    except Exception:
        return None
    if not wall or not mono:
        return None
    return wall / 1e6 - mono / 1e6

"""What the process table says: start times of recorded pids, units with processes, blindness.

Every OS error about a process is translated here, and nowhere else, into a Presence.
Reads only the pids objects record (cost grows with distinct pids, not with the table), and
walks /proc/*/cgroup once only when some owner is bound to a unit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import NamedTuple

from ..errors import NotPermittedError
from ..model import BASE_REUSE_MARGIN, HostFacts, Pid, Presence, ProcessInfo, Seconds, UnitState
from ..state import state_dir
from ..unitnames import unit_matches
from .tasks import queue_waiters

INIT_PID_NS_INODE = 0xEFFFFFFC  # PROC_PID_INIT_INO in include/linux/proc_ns.h
CAP_SYS_PTRACE = 19


@cache
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def boot_time() -> float:
    """The wall-clock time of boot, to turn /proc/PID/stat start ticks into epoch seconds.

    Computed as /proc/stat's btime is, but from the clocks themselves: it needs no /proc/stat
    (absent with subset=pid) and keeps sub-second precision.
    """
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def stat_fields(text: str) -> list[str]:
    """The fields of /proc/PID/stat after "pid (comm) ", from state (field 3) on (proc(5));
    comm may itself hold spaces and parentheses."""
    return text[text.rindex(")") + 2 :].split()


def parse_stat(text: str, btime: float) -> tuple[str, float]:
    """(state, start time in epoch seconds) from the text of /proc/PID/stat."""
    rest = stat_fields(text)
    return rest[0], btime + int(rest[19]) / _clock_ticks()  # starttime is field 22


def _exists(pid: Pid) -> bool | None:
    """kill(pid, 0): True exists, False gone, None cannot tell."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # EPERM: a process exists that we may not signal
    except OSError:
        return None
    return True


def probe(pid: Pid, procfs: Path, btime: float) -> ProcessInfo:
    """One pid: absent, zombie, hidden, or present with its start time."""
    try:
        state, start = parse_stat((procfs / str(pid) / "stat").read_text(), btime)
    except FileNotFoundError:
        # hidepid=invisible hides /proc/PID entirely; kill(0) still tells existence
        exists = _exists(pid) if procfs == Path("/proc") else False
        if exists is False:
            return ProcessInfo(Presence.ABSENT)
        return ProcessInfo(Presence.HIDDEN, detail=f"pid {pid} exists but /proc/{pid} is hidden")
    except ProcessLookupError:
        return ProcessInfo(Presence.ABSENT)
    except (PermissionError, OSError, ValueError, IndexError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "unparsable"
        return ProcessInfo(Presence.HIDDEN, detail=f"/proc/{pid}/stat: {why}")
    if state in ("Z", "X"):
        try:
            if len(os.listdir(procfs / str(pid) / "task")) <= 1:
                return ProcessInfo(Presence.ZOMBIE, start)
        except OSError:
            pass
        # a zombie thread-group leader whose other threads still run is alive
    return ProcessInfo(Presence.PRESENT, start)


def _mount_options(procfs: Path) -> list[str]:
    target = str(procfs.resolve())
    options: list[str] = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if left.split()[4] == target:
                options = right.split()[2].split(",")  # the last such mount is on top
    except (OSError, IndexError):
        pass
    return options


def _status_field(name: str) -> str | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _has_cap(bit: int) -> bool:
    eff = _status_field("CapEff")
    return eff is not None and bool(int(eff, 16) >> bit & 1)


def _hidepid_blinds(opts: list[str]) -> str | None:
    """Why /proc's hidepid= may hide processes from us, honouring its gid= exemption."""
    hide = next((o.split("=", 1)[1] for o in opts if o.startswith("hidepid=")), None)
    if hide is None or hide in ("0", "off"):
        return None
    if os.geteuid() == 0 and _has_cap(CAP_SYS_PTRACE):
        return None  # ptrace access to every process: hidepid hides nothing from us
    gid = next((o.split("=", 1)[1] for o in opts if o.startswith("gid=")), None)
    if gid is not None and gid.isdigit() and int(gid) in (os.getegid(), *os.getgroups()):
        return None  # hidepid's gid= lets this group see every process
    return (
        f"/proc is mounted with hidepid={hide}: other users' processes may be invisible "
        "(run as root with CAP_SYS_PTRACE, or in the group named by its gid= option)"
    )


def hidepid_blinds(procfs: Path = Path("/proc")) -> str | None:
    """Why the /proc at procfs may hide other users' processes from us (None: it hides none)."""
    return _hidepid_blinds(_mount_options(procfs))


def in_host_pid_namespace() -> bool:
    """Whether we run in the initial pid namespace, where no process is hidden from us."""
    try:
        return os.readlink("/proc/self/ns/pid") == f"pid:[{INIT_PID_NS_INODE}]"
    except OSError:
        return False


class Visibility(NamedTuple):
    blind: str | None  # why some processes may be invisible to us
    hidden_pids: str | None  # why a zero pid without a trace may still hide a live process


def visibility(procfs: Path = Path("/proc"), pid_namespace_complete: bool = False) -> Visibility:
    """What we may not see of the processes that can use our IPC namespace.

    Raises NotPermittedError when /proc shows no process table, or another pid namespace's.
    Outside the host's pid namespace the kernel reports processes of other pid namespaces as
    pid 0; unless the operator states that ours holds every process of our IPC namespace
    (the policy's pid_namespace_complete), such a zero is a doubt.
    """
    if procfs == Path("/proc"):
        try:
            self_pid = int(os.readlink("/proc/self"))
        except (OSError, ValueError):
            raise NotPermittedError(
                "/proc is not mounted (or shows no processes): ipcjanitor cannot see the "
                "process table, so it cannot prove any object unused and removes none"
            ) from None
        if self_pid != os.getpid():
            raise NotPermittedError(
                f"/proc belongs to another pid namespace (/proc/self is {self_pid}, we are "
                f"{os.getpid()}): its pids are not the ones the kernel records for us, so "
                "ipcjanitor cannot prove any object unused and removes none"
            )
    hidden = None
    if not in_host_pid_namespace() and not pid_namespace_complete:
        hidden = (
            "ipcjanitor runs outside the host's pid namespace: processes of other pid "
            "namespaces that share its IPC namespace are invisible and read as pid 0 "
            "(set pid_namespace_complete = true only if this namespace holds them all)"
        )
    return Visibility(_hidepid_blinds(_mount_options(procfs)) or hidden, hidden)


def own_pids() -> frozenset[Pid]:
    return frozenset({os.getpid()})


def cgroup_unit_name(component: str) -> str:
    """The unit name a cgroup directory stands for: systemd's cg_unescape().

    systemd escapes a unit's cgroup directory with a leading "_" when the name would clash
    with the cgroup file system's own names (memory.service lives in _memory.service) or starts
    with "_" or "." itself (_billing.service in __billing.service); read raw, such a running
    unit would look stopped.
    """
    return component[1:] if component.startswith("_") else component


def running_units(
    patterns: Iterable[str], procfs: Path, exclude: frozenset[Pid]
) -> dict[str, bool]:
    """For each unit pattern: does any process (but `exclude`) sit in a cgroup of that unit?"""
    pending = set(patterns)
    found: dict[str, bool] = dict.fromkeys(pending, False)
    if not pending:
        return found
    for entry in os.scandir(procfs):
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            text = Path(entry.path, "cgroup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            for component in parts[2].split("/"):
                if "." not in component:
                    continue
                name = cgroup_unit_name(component)
                for pattern in [p for p in pending if unit_matches(p, name)]:
                    found[pattern] = True
                    pending.discard(pattern)
        if not pending:
            break
    return found


def unit_processes(
    patterns: Iterable[str], procfs: Path = Path("/proc"), exclude: frozenset[Pid] = frozenset()
) -> dict[str, list[Pid]]:
    """For each unit pattern: every process (but `exclude`) in a cgroup of that unit."""
    found: dict[str, list[Pid]] = {p: [] for p in patterns}
    if not found:
        return found
    for entry in os.scandir(procfs):
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            text = Path(entry.path, "cgroup").read_text()
        except OSError:
            continue
        names = {
            cgroup_unit_name(component)
            for line in text.splitlines()
            for component in line.split(":", 2)[-1].split("/")
            if "." in component
        }
        for pattern, pids in found.items():
            if any(unit_matches(pattern, name) for name in names):
                pids.append(int(entry.name))
    return found


def unit_of_pid(pid: Pid, procfs: Path = Path("/proc")) -> str | None:
    """The systemd unit a process belongs to, from its cgroup path (the innermost unit)."""
    try:
        text = (procfs / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    best: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[1] not in ("", "name=systemd"):
            continue
        for component in parts[2].split("/"):
            if component.endswith((".service", ".scope")):
                best = cgroup_unit_name(component)
    return best


CLOCK_RECORD = "clock-offset"
_JITTER = 0.5  # reading two clocks in a row is not instantaneous


def clock_offset() -> float:
    """Wall clock minus monotonic clock: it moves only when the wall clock is stepped (or the
    machine was suspended, which monotonic does not count: that only widens the margin)."""
    return time.time() - time.monotonic()


def forward_clock_steps(
    state: Path,
    offset: float | None = None,
    at_boot: float | Callable[[], float | None] | None = None,
) -> float:
    """How far the wall clock has been stepped forward since boot.

    A process's start time is its boot-clock ticks plus today's boot time in wall-clock terms;
    an object's times were written with the wall clock of their moment. A forward step in
    between makes a live process look younger than its own object — never allowed to pass for
    PID reuse. `at_boot` is the wall-minus-monotonic offset when userspace started, as systemd
    recorded it (systemd.bus.boot_clock_offset), or a callable giving it; the smallest offset
    seen by any run of this boot is kept in `state` (a tmpfs under /run) as well, so a step
    is seen even without systemd's record, if a run came before it. Every step forward since
    the smallest of those widens the reuse margin.
    """
    if offset is None:
        offset = clock_offset()
    boot_id = _boot_id()
    seen = offset
    try:
        recorded_boot, recorded = state.read_text().split()
        if recorded_boot == boot_id:
            seen = min(float(recorded), offset)
    except (OSError, ValueError):
        pass
    if seen == offset:
        _record(state, f"{boot_id} {offset!r}\n")
    boot = at_boot() if callable(at_boot) else at_boot
    if boot is not None:
        seen = min(seen, boot)
    step = offset - seen
    return step if step > _JITTER else 0.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _record(state: Path, text: str) -> None:
    """Best effort: without a writable state dir the margin just cannot widen later."""
    tmp = state.with_name(f".{state.name}.{os.getpid()}")
    try:
        state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # root's alone (lock.py)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, state)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def gather(
    pids: Mapping[Pid, Seconds],
    unit_patterns: Iterable[str] = (),
    procfs: Path = Path("/proc"),
    exclude: frozenset[Pid] | None = None,
    *,
    queues: bool = False,
    pid_namespace_complete: bool = False,
    boot_offset: Callable[[], float | None] | None = None,
) -> HostFacts:
    """One look at the process table for the pids, units and queues a decision needs.

    `pids` maps each recorded pid to the oldest last activity of the objects recording it:
    the clock's history is asked for only when some live process started later than that
    (only then could a forward step of the wall clock pass a live holder off as a new one).
    `boot_offset` gives systemd's record of the clock at boot (the engine hands in the D-Bus
    question, asked only then; the facts layer itself asks no bus).
    """
    seen = visibility(procfs, pid_namespace_complete)
    btime = boot_time()
    processes = {pid: probe(pid, procfs, btime) for pid in pids if pid > 0}
    margin = BASE_REUSE_MARGIN
    if any(
        info.start_time is not None and info.start_time - pids[pid] > BASE_REUSE_MARGIN
        for pid, info in processes.items()
    ):
        margin += forward_clock_steps(state_dir() / CLOCK_RECORD, at_boot=boot_offset)
    running = running_units(unit_patterns, procfs, own_pids() if exclude is None else exclude)
    units = {
        u: UnitState.RUNNING if up else (UnitState.UNKNOWN if seen.blind else UnitState.STOPPED)
        for u, up in running.items()
    }
    waiters = None
    queue_blind = None
    if queues:
        found = queue_waiters(procfs)
        waiters, queue_blind = found.waiters, seen.blind or found.blind
    return HostFacts(
        processes=processes,
        units=units,
        hidden_pids=seen.hidden_pids,
        blind=seen.blind,
        queue_waiters=waiters,
        queue_blind=queue_blind,
        reuse_margin=margin,
    )

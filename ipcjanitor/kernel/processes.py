"""What the process table says: start times of recorded pids, units with processes, blindness.

Every OS error about a process is translated here, and nowhere else, into a Presence.
Reads only the pids objects record (cost grows with distinct pids, not with the table), and
walks /proc/*/cgroup once only when some owner is bound to a unit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from ..clock import TimerState, coverage, forward_step
from ..errors import NotPermittedError
from ..escape import safe_name
from ..model import BASE_REUSE_MARGIN, HostFacts, Pid, Presence, ProcessInfo, Seconds, UnitState
from ..state import ROOT_STATE_DIR
from ..unitnames import primary_name, unit_matches
from .clock import boot_id, read_record, time_namespace
from .clock import reading as clock_reading
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
    patterns: Iterable[str],
    procfs: Path,
    exclude: frozenset[Pid],
    primary: Mapping[str, str] = MappingProxyType({}),
) -> dict[str, bool]:
    """For each unit pattern: does any process (but `exclude`) sit in a cgroup of that unit?

    A cgroup carries only the name systemd runs a unit under: a pattern naming an alias is
    matched by its primary name too (`primary`: pattern -> that name, where they differ)."""
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
                for pattern in [
                    p
                    for p in pending
                    if unit_matches(p, name) or (p in primary and unit_matches(primary[p], name))
                ]:
                    found[pattern] = True
                    pending.discard(pattern)
        if not pending:
            break
    return found


def process_comm(pid: Pid, procfs: Path = Path("/proc")) -> str:
    """The process's comm, escaped (its owner chose it: escapes included), or "?" if gone."""
    try:
        raw = (procfs / str(pid) / "comm").read_bytes()
    except OSError:
        return "?"
    return safe_name(raw.decode(errors="surrogateescape").strip())


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
    return None if best is None else safe_name(best)  # a delegated subtree names its own


def _clock_facts(
    btime: float,
    clock_timer: Callable[[], tuple[TimerState | None, str | None]] | None,
    clock_dir: Path,
) -> tuple[float, float | None, str]:
    """The forward step to allow for, from when (counted as start times are, from `btime`)
    every step of the wall clock is on record, and why not earlier (clock.coverage)."""
    timer, why = clock_timer() if clock_timer else (None, "systemd was not asked")
    now = clock_reading()
    cover = coverage(read_record(clock_dir), boot_id(), time_namespace(), now, timer,
                     why or "no answer")  # fmt: skip
    since = None if cover.since_boot is None else btime + cover.since_boot
    return forward_step(now.offset, cover.low), since, cover.gap


def gather(
    pids: Mapping[Pid, Seconds],
    unit_patterns: Iterable[str] = (),
    procfs: Path = Path("/proc"),
    exclude: frozenset[Pid] | None = None,
    *,
    queues: bool = False,
    pid_namespace_complete: bool = False,
    clock_timer: Callable[[], tuple[TimerState | None, str | None]] | None = None,
    clock_dir: Path = ROOT_STATE_DIR,
    aliases: Mapping[str, str] = MappingProxyType({}),
) -> HostFacts:
    """One look at the process table for the pids, units and queues a decision needs.

    `pids` maps each recorded pid to the oldest last activity of the objects recording it:
    the record of the clock's steps is read only when some live process started later than
    that (only then could a step of the wall clock pass a live holder off as a new one).
    `clock_timer` asks systemd about the recorder's timer (the engine hands in the D-Bus
    question, asked only then; the facts layer itself asks no bus).
    `aliases` are the unit-file aliases (systemd.unitfiles.read_aliases): a unit named by an
    alias is looked for under the name systemd runs it as.
    """
    seen = visibility(procfs, pid_namespace_complete)
    btime = boot_time()
    processes = {pid: probe(pid, procfs, btime) for pid in pids if pid > 0}
    margin, covered_from, gap = BASE_REUSE_MARGIN, None, "the clock's steps were not looked at"
    if any(
        info.start_time is not None and info.start_time - pids[pid] > BASE_REUSE_MARGIN
        for pid, info in processes.items()
    ):
        step, covered_from, gap = _clock_facts(btime, clock_timer, clock_dir)
        margin += step
    patterns = set(unit_patterns)
    primary = {p: n for p in patterns if (n := primary_name(p, aliases)) != p}
    excluded = own_pids() if exclude is None else exclude
    running = running_units(patterns, procfs, excluded, primary)
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
        unit_names=primary,
        clock_covered_from=covered_from,
        clock_gap=gap,
    )

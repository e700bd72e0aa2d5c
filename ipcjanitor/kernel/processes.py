"""What the process table says: start times of recorded pids, units with processes, blindness.

What procfs.py reads of a process (gone, or hidden) becomes a Presence here. Reads only
the pids objects record (cost grows with distinct pids, not with the table). Whether a unit
has processes is read from its cgroup (cgroups.py); only where the cgroup tree cannot
prove it is /proc/*/cgroup walked, once, under the blindness rules.
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
from .cgroups import CgroupTree, UnitCgroup, cgroup_unit_name, judge, unit_cgroups
from .clock import boot_id, read_record, time_namespace
from .clock import reading as clock_reading
from .procfs import (
    LIVE,
    Procfs,
    Unread,
    listdir,
    of,
    read_bytes,
    read_text,
    status_field,
    units_by_pid,
)
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


def probe(pid: Pid, procfs: Path | Procfs, btime: float) -> ProcessInfo:
    """One pid: absent, zombie, hidden, or present with its start time."""
    proc = of(procfs)
    text = read_text(proc.root, pid, "stat")
    if isinstance(text, Unread):
        if not text.gone:
            return ProcessInfo(Presence.HIDDEN, detail=f"/proc/{pid}/stat: {text.why}")
        # hidepid=invisible hides /proc/PID entirely; kill(0) on the live kernel still tells
        if not proc.live or _exists(pid) is False:
            return ProcessInfo(Presence.ABSENT)
        return ProcessInfo(Presence.HIDDEN, detail=f"pid {pid} exists but /proc/{pid} is hidden")
    try:
        state, start = parse_stat(text, btime)
    except (ValueError, IndexError):
        return ProcessInfo(Presence.HIDDEN, detail=f"/proc/{pid}/stat: unparsable")
    if state in ("Z", "X"):
        tids = listdir(proc.root, pid, "task")
        if not isinstance(tids, Unread) and len(tids) <= 1:
            return ProcessInfo(Presence.ZOMBIE, start)
        # a zombie thread-group leader whose other threads still run is alive
    return ProcessInfo(Presence.PRESENT, start)


def _mount_options(proc: Procfs) -> list[str]:
    """The options of the procfs's mount, as its own self/mountinfo tells them: the live
    kernel's for LIVE; a captured tree's own (taken as a /proc mounted at /proc) for one."""
    target = str(proc.root.resolve()) if proc.live else "/proc"
    text = read_text(proc.root, "self", "mountinfo")
    options: list[str] = []
    for line in () if isinstance(text, Unread) else text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) > 4 and len(rest) > 2 and fields[4] == target:
            options = rest[2].split(",")  # the last such mount is on top
    return options


class _Credentials(NamedTuple):
    """Who reads the procfs: its euid, groups and effective capabilities."""

    euid: int | None
    groups: frozenset[int]
    cap_eff: int


def _credentials(proc: Procfs) -> _Credentials:
    """Ours on the live kernel; a captured tree's reader's from its self/status, so that
    what hidepid= hid from the capture is judged by who captured it."""
    text = read_text(proc.root, "self", "status")
    status = "" if isinstance(text, Unread) else text
    eff = status_field(status, "CapEff")
    cap_eff = int(eff, 16) if eff and _is_hex(eff) else 0
    if proc.live:
        return _Credentials(os.geteuid(), frozenset((os.getegid(), *os.getgroups())), cap_eff)
    uid = (status_field(status, "Uid") or "").split()
    gid = (status_field(status, "Gid") or "").split()
    groups = (status_field(status, "Groups") or "").split()
    ids = {int(g) for g in [*gid[1:2], *groups] if g.isdigit()}
    euid = int(uid[1]) if len(uid) > 1 and uid[1].isdigit() else None
    return _Credentials(euid, frozenset(ids), cap_eff)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _hidepid_blinds(opts: list[str], who: _Credentials) -> str | None:
    """Why /proc's hidepid= may hide processes from us, honouring its gid= exemption."""
    hide = next((o.split("=", 1)[1] for o in opts if o.startswith("hidepid=")), None)
    if hide is None or hide in ("0", "off"):
        return None
    if who.euid == 0 and who.cap_eff >> CAP_SYS_PTRACE & 1:
        return None  # ptrace access to every process: hidepid hides nothing from us
    gid = next((o.split("=", 1)[1] for o in opts if o.startswith("gid=")), None)
    if gid is not None and gid.isdigit() and int(gid) in who.groups:
        return None  # hidepid's gid= lets this group see every process
    return (
        f"/proc is mounted with hidepid={hide}: other users' processes may be invisible "
        "(run as root with CAP_SYS_PTRACE, or in the group named by its gid= option)"
    )


def hidepid_blinds(procfs: Path | Procfs = LIVE) -> str | None:
    """Why the /proc at procfs may hide other users' processes from us (None: it hides none)."""
    proc = of(procfs)
    return _hidepid_blinds(_mount_options(proc), _credentials(proc))


def in_host_pid_namespace(procfs: Path | Procfs = LIVE) -> bool:
    """Whether the procfs's reader (we, on LIVE) runs in the initial pid namespace, where no
    process is hidden from it: its self/ns/pid link; a tree without one is not."""
    try:
        link = os.readlink(f"{os.fspath(of(procfs).root)}/self/ns/pid")
    except OSError:
        return False
    return link == f"pid:[{INIT_PID_NS_INODE}]"


class Visibility(NamedTuple):
    blind: str | None  # why some processes may be invisible to us
    hidden_pids: str | None  # why a zero pid without a trace may still hide a live process


def visibility(procfs: Path | Procfs = LIVE, pid_namespace_complete: bool = False) -> Visibility:
    """What we may not see of the processes that can use our IPC namespace.

    Raises NotPermittedError when /proc shows no process table, or another pid namespace's.
    Outside the host's pid namespace the kernel reports processes of other pid namespaces as
    pid 0; unless the operator states that ours holds every process of our IPC namespace
    (the policy's pid_namespace_complete), such a zero is a doubt.
    """
    proc = of(procfs)
    if proc.live:
        try:
            self_pid = int(os.readlink(proc.root / "self"))
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
    if not in_host_pid_namespace(proc) and not pid_namespace_complete:
        hidden = (
            "ipcjanitor runs outside the host's pid namespace: processes of other pid "
            "namespaces that share its IPC namespace are invisible and read as pid 0 "
            "(set pid_namespace_complete = true only if this namespace holds them all)"
        )
    return Visibility(hidepid_blinds(proc) or hidden, hidden)


def own_pids() -> frozenset[Pid]:
    return frozenset({os.getpid()})


def running_units(
    patterns: Iterable[str],
    procfs: Path | Procfs,
    exclude: frozenset[Pid],
    primary: Mapping[str, str] = MappingProxyType({}),
) -> dict[str, bool]:
    """For each unit pattern: does any process (but `exclude`) sit in a cgroup of that unit?

    A cgroup carries only the name systemd runs a unit under: a pattern naming an alias is
    matched by its primary name too (`primary`: pattern -> that name, where they differ)."""
    pending = set(patterns)
    found: dict[str, bool] = dict.fromkeys(pending, False)
    for _, names in units_by_pid(of(procfs).root, exclude) if pending else ():
        for pattern in [p for p in pending if _matches(p, names, primary)]:
            found[pattern] = True
            pending.discard(pattern)
        if not pending:
            break
    return found


def _matches(pattern: str, names: Iterable[str], primary: Mapping[str, str]) -> bool:
    alias = primary.get(pattern)
    return any(unit_matches(pattern, n) or (alias and unit_matches(alias, n)) for n in names)


def process_comm(pid: Pid, procfs: Path | Procfs = LIVE) -> str:
    """The process's comm, escaped (its owner chose it: escapes included), or "?" if gone."""
    raw = read_bytes(of(procfs).root, pid, "comm", 256)  # once per holding process
    if isinstance(raw, Unread):
        return "?"
    return safe_name(raw.decode(errors="surrogateescape").strip())


def unit_processes(
    patterns: Iterable[str], procfs: Path | Procfs = LIVE, exclude: frozenset[Pid] = frozenset()
) -> dict[str, list[Pid]]:
    """For each unit pattern: every process (but `exclude`) in a cgroup of that unit."""
    found: dict[str, list[Pid]] = {p: [] for p in patterns}
    for pid, names in units_by_pid(of(procfs).root, exclude) if found else ():
        for pattern, pids in found.items():
            if any(unit_matches(pattern, name) for name in names):
                pids.append(pid)
    return found


def unit_of_pid(pid: Pid, procfs: Path | Procfs = LIVE) -> str | None:
    """The systemd unit a process belongs to, from its cgroup path (the innermost unit)."""
    text = read_text(of(procfs).root, pid, "cgroup")
    if isinstance(text, Unread):
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


def _unit_states(
    patterns: set[str],
    procfs: Path,
    excluded: frozenset[Pid],
    primary: Mapping[str, str],
    seen: Visibility,
    *,
    tree: CgroupTree,
) -> tuple[dict[str, UnitState], dict[str, str]]:
    """Each unit's state from its cgroup (cgroups.judge), else from /proc/*/cgroup, where a
    unit that shows no process is UNKNOWN while we may not see every process."""
    units: dict[str, UnitState] = {}
    notes: dict[str, str] = {}
    rest = set()
    for u in patterns:
        found = tree.units.get(u)
        state = judge(found, seen.hidden_pids is not None)
        if state is None or found is None:
            rest.add(u)
            if seen.blind:
                notes[u] = _unproven(found, tree)
            continue
        units[u] = state
        if found.pids.count(0):
            notes[u] = (
                f"its cgroup lists {found.pids.count(0)} process(es) this pid namespace "
                "cannot see (pid 0 in cgroup.procs)"
            )
    for u, up in running_units(rest, procfs, excluded, primary).items():
        units[u] = (
            UnitState.RUNNING if up else (UnitState.UNKNOWN if seen.blind else UnitState.STOPPED)
        )
    return units, notes


def _unproven(found: UnitCgroup | None, tree: CgroupTree) -> str:
    """Why a unit's cgroup proved nothing."""
    if found is not None:
        return "its cgroup v1 leaves out processes of other pid namespaces"
    return tree.blind or "its cgroup was not read"


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


UNREAD = CgroupTree(blind="")  # not read: a captured /proc tree, or cgroups=False


def _launcher(hook_pid: Pid | None) -> frozenset[Pid]:
    """The hook's launcher, when the hook server runs a hook for it (hook/serve.py): it sits
    in the hooked unit's cgroup, and is no process of that unit."""
    return frozenset() if hook_pid is None else frozenset({hook_pid})


def gather(
    pids: Mapping[Pid, Seconds],
    unit_patterns: Iterable[str] = (),
    procfs: Path | Procfs = LIVE,
    exclude: frozenset[Pid] | None = None,
    *,
    queues: bool = False,
    pid_namespace_complete: bool = False,
    clock_timer: Callable[[], tuple[TimerState | None, str | None]] | None = None,
    clock_dir: Path = ROOT_STATE_DIR,
    aliases: Mapping[str, str] = MappingProxyType({}),
    own_unit: str | None = None,
    hook_pid: Pid | None = None,
    cgroups: bool | None = None,
) -> HostFacts:
    """One look at the process table for the pids, units and queues a decision needs.

    `pids` maps each recorded pid to the oldest last activity of the objects recording it:
    the record of the clock's steps is read only when some live process started later than
    that (only then could a step of the wall clock pass a live holder off as a new one).
    `clock_timer` asks systemd about the recorder's timer (the engine hands in the D-Bus
    question, asked only then; the facts layer itself asks no bus).
    `aliases` (systemd.unitfiles.read_aliases): a unit named by an alias is looked for under
    the name systemd runs it as. `hook_pid`: see _launcher."""
    proc = of(procfs)
    seen = visibility(proc, pid_namespace_complete)
    btime = boot_time()
    processes = {pid: probe(pid, proc, btime) for pid in pids if pid > 0}
    margin, covered_from, gap = BASE_REUSE_MARGIN, None, "the clock's steps were not looked at"
    if any(
        info.start_time is not None and info.start_time - pids[pid] > BASE_REUSE_MARGIN
        for pid, info in processes.items()
    ):
        step, covered_from, gap = _clock_facts(btime, clock_timer, clock_dir)
        margin += step
    patterns = set(unit_patterns)
    primary = {p: n for p in patterns if (n := primary_name(p, aliases)) != p}
    excluded = (own_pids() if exclude is None else exclude) | _launcher(hook_pid)
    read = cgroups or (cgroups is None and proc.live)
    tree = unit_cgroups(patterns, primary, excluded, own_unit, hook_pid) if read else UNREAD
    units, unit_notes = _unit_states(patterns, proc.root, excluded, primary, seen, tree=tree)
    waiters = None
    queue_blind = None
    if queues:
        found = queue_waiters(proc.root)
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
        unit_notes=unit_notes,
    )

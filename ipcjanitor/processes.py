"""What the process table says: start times of recorded pids, units with processes, blindness.

Every OS error about a process is translated here, and nowhere else, into a Presence.
Reads only the pids objects record (cost grows with distinct pids, not with the table), and
walks /proc/*/cgroup once only when some owner is bound to a unit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from .errors import NotPermittedError
from .lock import state_dir
from .model import BASE_REUSE_MARGIN, HostFacts, Pid, Presence, ProcessInfo, UnitState
from .policy import unit_matches

INIT_IPC_NS_INODE = 0xEFFFFFFF  # PROC_IPC_INIT_INO in include/linux/proc_ns.h
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


def _has_cap(bit: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return False


def _nspid_depth() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return len(line.split()) - 1
    except OSError:
        pass
    return 1


def blindness(procfs: Path = Path("/proc")) -> str | None:
    """Why we may not see every process that can use our IPC namespace, or None."""
    if procfs == Path("/proc"):
        try:
            self_pid = int(os.readlink("/proc/self"))
        except (OSError, ValueError):
            raise NotPermittedError(
                "/proc is not mounted (or shows no processes): ipcjanitor cannot see the "
                "process table, so it cannot prove any object unused; nothing was removed"
            ) from None
        if self_pid != os.getpid():
            raise NotPermittedError(
                f"/proc belongs to another pid namespace (/proc/self is {self_pid}, we are "
                f"{os.getpid()}): its pids are not the ones the kernel records for us, so "
                "ipcjanitor cannot prove any object unused; nothing was removed"
            )
    for opt in _mount_options(procfs):
        hides = opt.startswith("hidepid=") and opt.split("=", 1)[1] not in ("0", "off")
        if hides and (os.geteuid() != 0 or not _has_cap(CAP_SYS_PTRACE)):
            return f"/proc is mounted with {opt}: other users' processes may be invisible"
    if _nspid_depth() > 1:
        try:
            own = os.readlink("/proc/self/ns/ipc")
        except OSError:
            return "cannot read /proc/self/ns/ipc while running in a nested pid namespace"
        if own == f"ipc:[{INIT_IPC_NS_INODE}]":
            return (
                "ipcjanitor runs in a nested pid namespace but uses the host's IPC namespace: "
                "processes outside its pid namespace are invisible and read as pid 0"
            )
        try:
            init_ipc = os.readlink(procfs / "1" / "ns" / "ipc")
        except OSError:
            init_ipc = None
        if init_ipc != own:
            return (
                "ipcjanitor runs in a nested pid namespace whose init does not share its IPC "
                "namespace: processes outside it are invisible and read as pid 0"
            )
    return None


def own_pids() -> frozenset[Pid]:
    return frozenset({os.getpid()})


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
                for pattern in [p for p in pending if unit_matches(p, component)]:
                    found[pattern] = True
                    pending.discard(pattern)
        if not pending:
            break
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
                best = component
    return best


CLOCK_RECORD = "clock-offset"
_JITTER = 0.5  # reading two clocks in a row is not instantaneous


def forward_clock_steps(state: Path, offset: float | None = None) -> float:
    """How far the wall clock has been stepped forward since the first run of this boot.

    A process's start time is its boot-time ticks plus today's boot time in wall-clock terms;
    an object's times were written with the wall clock of their moment. A forward step in
    between makes a live process look younger than its own object — never allowed to pass for
    PID reuse: the smallest wall-minus-boot-clock offset of this boot is kept in `state` (a
    tmpfs under /run), and every step forward since is added to the reuse margin.
    """
    if offset is None:
        offset = boot_time()
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
        state.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, state)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def gather(
    pids: Iterable[Pid],
    unit_patterns: Iterable[str] = (),
    procfs: Path = Path("/proc"),
    exclude: frozenset[Pid] | None = None,
) -> HostFacts:
    """One look at the process table for the pids and units a decision needs."""
    hidden = blindness(procfs)
    btime = boot_time()
    margin = BASE_REUSE_MARGIN + forward_clock_steps(state_dir() / CLOCK_RECORD, btime)
    processes = {pid: probe(pid, procfs, btime) for pid in set(pids) if pid > 0}
    running = running_units(unit_patterns, procfs, own_pids() if exclude is None else exclude)
    units = {
        u: UnitState.RUNNING if up else (UnitState.UNKNOWN if hidden else UnitState.STOPPED)
        for u, up in running.items()
    }
    return HostFacts(processes=processes, units=units, hidden_pids=hidden, reuse_margin=margin)

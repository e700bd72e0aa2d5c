"""`doctor`: the early warnings of both incidents.

1. An IPC table close to full: the next shmget()/shm_attach() is close to ENOSPC.
2. A process blocked writing to a pipe that no other process can ever drain (the supervisord
   leak: it holds both ends of its own stdout pipe).
3. Owners bound to a unit with no ipcjanitor hook installed.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..kernel.processes import stat_fields, unit_of_pid
from ..model import IpcKind, IpcObject
from ..policy.model import Policy
from ..systemd import unitctx

THRESHOLD = 0.90
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# write(2) and writev(2) by machine (asm/unistd.h); wchan is the first witness, this the second
_WRITE_SYSCALLS = {"x86_64": (1, 20), "aarch64": (64, 66), "ppc64le": (4, 146), "s390x": (4, 146)}
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)


class Limits(NamedTuple):
    shmmni: int
    shmall: int  # pages
    semmni: int
    semmns: int
    msgmni: int


class LimitRow(NamedTuple):
    kind: str
    measure: str  # "objects", "pages", "semaphores"
    limit: str  # the sysctl that bounds it
    used: int
    max: int
    stale: int | None  # of the objects counted, how many `clean` would free now

    @property
    def problem(self) -> bool:
        return self.max > 0 and self.used >= THRESHOLD * self.max

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.max if self.max else 0.0


def read_limits(procfs: Path = Path("/proc")) -> Limits:
    k = procfs / "sys" / "kernel"
    sem = (k / "sem").read_text().split()  # SEMMSL SEMMNS SEMOPM SEMMNI
    return Limits(
        shmmni=int((k / "shmmni").read_text()),
        shmall=int((k / "shmall").read_text()),
        semmni=int(sem[3]),
        semmns=int(sem[1]),
        msgmni=int((k / "msgmni").read_text()),
    )


def limit_rows(
    objects: Sequence[IpcObject], limits: Limits, stale: dict[IpcKind, int] | None
) -> list[LimitRow]:
    """PURE: each table's use against its limits."""
    by_kind = Counter(o.kind for o in objects)
    pages = sum(-(-o.size // PAGE_SIZE) for o in objects if o.kind is IpcKind.SHM)
    sems = sum(o.nsems for o in objects if o.kind is IpcKind.SEM)

    def st(kind: IpcKind) -> int | None:
        return None if stale is None else stale.get(kind, 0)

    shm, sem, msg = IpcKind.SHM, IpcKind.SEM, IpcKind.MSG
    return [
        LimitRow("shm", "objects", "kernel.shmmni", by_kind[shm], limits.shmmni, st(shm)),
        LimitRow("shm", "pages", "kernel.shmall", pages, limits.shmall, st(shm)),
        LimitRow("sem", "objects", "kernel.sem semmni", by_kind[sem], limits.semmni, st(sem)),
        LimitRow("sem", "semaphores", "kernel.sem semmns", sems, limits.semmns, st(sem)),
        LimitRow("msg", "objects", "kernel.msgmni", by_kind[msg], limits.msgmni, st(msg)),
    ]


class StuckPipe(NamedTuple):
    pid: int
    command: str
    fds: list[int]  # this process's fds on the pipe: the one it is blocked on first
    read_fds: list[int]  # of those, the read ends it holds itself
    inode: int
    unit: str | None
    orphaned: bool
    holds_read_end: bool  # the supervisord leak: only it could drain its own pipe
    wchan: str


def _pipe_ends(procfs: Path) -> dict[int, list[tuple[int, int, bool]]]:
    """pipe inode -> [(pid, fd, is_read_end)] over every process we can read."""
    ends: dict[int, list[tuple[int, int, bool]]] = {}
    for entry in os.scandir(procfs):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fds = os.listdir(f"{entry.path}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{entry.path}/fd/{fd}")
                if not target.startswith("pipe:["):
                    continue
                flags = _fd_flags(Path(entry.path, "fdinfo", fd).read_text())
            except OSError:
                continue
            readable = flags & 0o3 in (os.O_RDONLY, os.O_RDWR)
            ends.setdefault(int(target[6:-1]), []).append((pid, int(fd), readable))
    return ends


def _fd_flags(fdinfo: str) -> int:
    for line in fdinfo.splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0


def _blocked_write_fd(pid: int, procfs: Path) -> tuple[int, str] | None:
    """(fd, wchan) when the process sleeps in a pipe write, else None."""
    try:
        wchan = (procfs / str(pid) / "wchan").read_text().strip()
        syscall = (procfs / str(pid) / "syscall").read_text().split()
    except OSError:
        return None
    if "pipe_write" not in wchan and "pipe_wait" not in wchan:
        return None
    writes = _WRITE_SYSCALLS.get(platform.machine(), ())
    if not syscall or not syscall[0].isdigit() or int(syscall[0]) not in writes:
        return None
    return int(syscall[1], 16), wchan


def _is_orphan(pid: int, unit: str | None, procfs: Path) -> bool:
    """Reparented to init or a subreaper (a systemd manager) — and not its unit's main process.

    Every service's main process is a child of PID 1 too; systemd (over D-Bus) says which pid
    that is. Without an answer, a child of init or of a manager counts as orphaned.
    """
    try:
        ppid = int(stat_fields((procfs / str(pid) / "stat").read_text())[1])  # field 4
        reaped_by_manager = (
            ppid <= 1 or (procfs / str(ppid) / "comm").read_text().strip() == "systemd"
        )
    except (OSError, ValueError, IndexError):
        return False
    if not reaped_by_manager:
        return False
    if unit is not None and unit.endswith(".service"):
        from ..systemd.bus import main_pid  # noqa: PLC0415  (only for the rare stuck process)

        return main_pid(unit) != pid
    return True


def find_stuck_pipes(procfs: Path = Path("/proc")) -> list[StuckPipe]:
    """Processes blocked writing to a pipe whose read end no other process holds."""
    blocked: dict[int, tuple[int, str]] = {}
    for entry in os.scandir(procfs):
        if entry.name.isdigit() and (hit := _blocked_write_fd(int(entry.name), procfs)):
            blocked[int(entry.name)] = hit
    if not blocked:
        return []
    ends = _pipe_ends(procfs)
    found = []
    for pid, (fd, wchan) in sorted(blocked.items()):
        try:
            target = os.readlink(procfs / str(pid) / "fd" / str(fd))
        except OSError:
            continue
        if not target.startswith("pipe:["):
            continue
        inode = int(target[6:-1])
        holders = ends.get(inode, [])
        if any(p != pid and readable for p, _, readable in holders):
            continue  # someone else can drain it: healthy, if slow
        unit = unit_of_pid(pid, procfs)
        own = [(f, readable) for p, f, readable in holders if p == pid]
        try:
            command = (procfs / str(pid) / "comm").read_text().strip()
        except OSError:
            command = "?"
        found.append(
            StuckPipe(
                pid=pid, command=command,
                fds=[fd, *sorted(f for f, _ in own if f != fd)],
                read_fds=sorted(f for f, readable in own if readable),
                inode=inode, unit=unit, orphaned=_is_orphan(pid, unit, procfs),
                holds_read_end=any(readable for _, readable in own), wchan=wchan,
            )
        )  # fmt: skip
    return found


_HOOK = re.compile(r'(^|[\s"])hook([\s"]|$)')  # the word, quoted by install-hook or not
UNSAFE_HOOK = (
    "its hook starts without a clean environment (a drop-in of an older install-hook: the "
    "service's PYTHONPATH or LD_PRELOAD would run as root)"
)
NO_HOOK = "has no ipcjanitor hook"
VIEW_PROBLEM = "its hook runs as root inside the service's file-system view: "


def hook_state(
    unit: str, dirs: Iterable[Path] = UNIT_DIRS, reader: unitctx.Reader | None = None
) -> tuple[str | None, str | None]:
    """(problem, note) about the unit's ipcjanitor hook: (None, None) when it is installed
    through the clean-environment trampoline (ipcjanitor-hook) on a unit whose options
    leave the hook's file-system view alone; a note when systemd cannot say which."""
    dirs = list(dirs)
    found = False
    for d in dirs:
        dropins = d / f"{unit}.d"
        if not dropins.is_dir():
            continue
        for conf in dropins.glob("*.conf"):
            try:
                text = conf.read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("ExecStopPost=") and "ipcjanitor" in line and _HOOK.search(line):
                    if "ipcjanitor-hook" not in line:
                        return UNSAFE_HOOK, None
                    found = True
    if not found:
        return NO_HOOK, None
    views, why = unitctx.views(unit, dirs, reader or unitctx.read)
    if why is not None:
        return None, f"cannot check the file-system view its hook runs in: {why}"
    problems = [f"{v.unit}: {p}" for v in views for p in v.problems()]
    if problems:
        return VIEW_PROBLEM + "; ".join(problems), None
    if any(v.need_reload for v in views):
        return None, "systemd has not loaded its latest unit files: run systemctl daemon-reload"
    return None, None


def missing_hooks(
    policy: Policy, dirs: Iterable[Path] = UNIT_DIRS, reader: unitctx.Reader | None = None
) -> list[dict[str, str]]:
    """Owners whose unit has no hook (a hint), an unsafe one (a problem), or one whose
    file-system view systemd could not be asked about (a note)."""
    dirs = list(dirs)
    rows = []
    for o in policy.owners:
        # an instance's owner is hooked by its template's drop-in: its template owner's row
        if not o.unit or not o.unit.endswith(".service") or o.template is not None:
            continue
        problem, note = hook_state(o.unit, dirs, reader)
        if problem is None and note is None:
            continue
        row = {"owner": o.name, "unit": o.unit, "fix": f"ipcjanitor install-hook {o.unit}"}
        if problem is not None and problem.startswith(VIEW_PROBLEM):
            row["problem"] = problem
            row["fix"] = f"ipcjanitor install-hook --remove {o.unit} until the unit is changed"
        elif problem not in (None, NO_HOOK):
            row["problem"] = problem
        elif note is not None:
            row["note"] = note
        rows.append(row)
    return rows


class Report(NamedTuple):
    limits: list[LimitRow]
    stuck_pipes: list[StuckPipe]
    hooks_missing: list[dict[str, str]]
    notes: list[str]

    @property
    def healthy(self) -> bool:
        return (
            not any(r.problem for r in self.limits)
            and not self.stuck_pipes
            and not any("problem" in h for h in self.hooks_missing)
        )

    def json(self) -> str:
        limits = [
            r._asdict() | {"percent": round(r.percent, 1), "problem": r.problem}
            for r in self.limits
        ]
        doc = {
            "limits": limits,
            "stuck_pipes": [s._asdict() for s in self.stuck_pipes],
            "hooks_missing": self.hooks_missing,
            "notes": self.notes,
            "healthy": self.healthy,
        }
        return json.dumps(doc, indent=2)

    def text(self) -> str:
        rows = [("KIND", "MEASURE", "USED", "MAX", "USE%", "STALE", "LIMIT")]
        for r in self.limits:
            stale = "-" if r.stale is None else str(r.stale)
            flag = "  <- PROBLEM: close to No space left on device" if r.problem else ""
            rows.append(
                (
                    r.kind,
                    r.measure,
                    str(r.used),
                    str(r.max),
                    f"{r.percent:.1f}%",
                    stale,
                    r.limit + flag,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(6)]

        def cell(i: int, text: str) -> str:
            return text.rjust(widths[i]) if 2 <= i <= 5 else text.ljust(widths[i])

        lines = ["  ".join(cell(i, row[i]) for i in range(6)) + "  " + row[6] for row in rows]
        lines.append("")
        if not self.stuck_pipes:
            lines.append("stuck pipes: none")
        for s in self.stuck_pipes:
            fds = ",".join(map(str, s.fds))
            who = (
                f"holds the read end itself (fd {','.join(map(str, s.read_fds))})"
                if s.holds_read_end
                else "no process holds the read end"
            )
            orphan = ", ORPHANED" if s.orphaned else ""
            lines.append(
                f"STUCK PIPE: pid {s.pid} ({s.command}) blocked writing fd {fds} pipe:[{s.inode}], "
                f"unit {s.unit or '-'}{orphan}; {who}"
            )
        for h in self.hooks_missing:
            if "problem" in h:
                lines.append(f"UNSAFE HOOK: owner {h['owner']}: {h['unit']}: {h['problem']}: "
                             f"{h['fix']}")  # fmt: skip
            elif "note" in h:
                lines.append(f"note: owner {h['owner']}: {h['unit']}: {h['note']}")
            else:
                lines.append(
                    f"hint: owner {h['owner']}: {h['unit']} has no ipcjanitor hook: {h['fix']}"
                )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append("healthy" if self.healthy else "PROBLEMS FOUND")
        return "\n".join(lines)

"""`doctor`: the early warnings of both incidents, as a table of checks (CHECKS).

1. An IPC table close to full: the next shmget()/shm_attach() is close to ENOSPC (limits.py,
   doctor_posix.py for /dev/shm and the queues).
2. A process blocked writing to a pipe that no other process can ever drain (the supervisord
   leak: it holds both ends of its own stdout pipe).
3. A message queue nothing can reach (IPC_PRIVATE, mode 000, never used).
4. Owners bound to a unit with no ipcjanitor hook installed, or an unsafe one.

Each check is a row: what it reports, its assessment, and how a finding is judged, put into
--json and shown. run_checks runs them; Report's text, JSON and health walk the same rows.
"""

from __future__ import annotations

import json
import os
import platform
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..kernel import tasks
from ..kernel.processes import hidepid_blinds, process_comm, stat_fields, unit_of_pid
from ..kernel.procfs import Unread, fd_link, fd_stat, listdir, pids, read_bytes, read_text
from ..model import IpcKind, IpcObject, PosixObject, Verdict
from ..output.columns import PLAIN, Style, as_json, render
from ..policy.model import Policy
from ..systemd import unitctx
from .doctor_posix import posix_rows
from .limits import LIMIT_COLUMNS, LimitRow, limit_rows, read_limits

UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)


class UnreachableQueue(NamedTuple):
    """A message queue nothing can ever use: IPC_PRIVATE (no key to find it by), mode 000
    (nobody may send or receive but a process with CAP_IPC_OWNER), never used. PHP 8.2's
    msg_get_queue(0) and msg_queue_exists(0) leave one per call (msgget(0, 0))."""

    id: int
    uid: int
    verdict: str

    def line(self) -> str:
        return (
            f"UNREACHABLE QUEUE: msg id {self.id} (uid {self.uid}): "
            "IPC_PRIVATE, mode 000, never used: nothing can send to or receive from it "
            f"({self.verdict}); remove it with `ipcrm -q {self.id}`, or bind its owner to "
            "its unit (`unit =`) so that ipcjanitor removes such queues once the unit stops"
        )


def unreachable_queues(
    objects: Sequence[IpcObject], verdicts: Mapping[tuple[IpcKind, int], str] | None = None
) -> list[UnreachableQueue]:
    """PURE: the queues no process can reach, that ipcjanitor keeps (not `stale`: those it
    removes itself). `verdicts` by (kind, id); without them (a policy error) every one."""
    found = []
    for o in objects:
        verdict = "policy not read" if verdicts is None else verdicts.get((o.kind, o.id), "")
        if (
            o.kind is IpcKind.MSG
            and o.key == 0
            and o.mode & 0o777 == 0
            and o.qnum == 0
            and o.never_used
            and verdict != Verdict.STALE.value
        ):
            found.append(UnreachableQueue(o.id, o.uid, verdict))
    return found


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
    tid: int  # the thread blocked: pid itself for the leader
    syscall: str  # write, writev, splice, vmsplice or tee
    target: str  # what the fd leads to: pipe:[inode], or a FIFO's path
    reader: str  # "self" (only it holds a read end), "none", or "unknown": see unknown
    unreadable: list[int]  # pids whose fds could not be read: any of them may be a reader
    unknown: str | None  # why doctor cannot tell whether another process reads the pipe

    @property
    def problem(self) -> bool:
        return self.reader != UNKNOWN


SELF, NONE, UNKNOWN = "self", "none", "unknown"
# Where a task sleeps waiting for room in a pipe: pipe_write (anon_pipe_write, fifo_pipe_write
# on 6.x), pipe_wait_writable for splice/vmsplice/tee since 5.8, pipe_wait before
_ROOM_WAITS = ("pipe_wait", "pipe_wait_writable", "wait_for_space")
_PF_KTHREAD = 0x00200000


class _Writer(NamedTuple):
    pid: int
    tid: int
    fd: int
    syscall: str
    wchan: str


class PipeScan(NamedTuple):
    found: list[StuckPipe]
    notes: list[str]  # what the scan could not see


def _kernel_thread(procfs: Path, pid: int) -> bool:
    """Kernel threads write to no pipe, and their /proc/PID/fd is root's: never a doubt."""
    text = read_text(procfs, pid, "stat", 512)
    try:
        return not isinstance(text, Unread) and int(stat_fields(text)[6]) & _PF_KTHREAD != 0
    except (ValueError, IndexError):  # field 9, flags
        return False


def _task_writer(procfs: Path, pid: int, tid: str, machine: str) -> _Writer | Unread | None:
    """The pipe write the task sleeps in; Unread when its state cannot be read."""
    wchan = read_text(procfs, pid, f"task/{tid}/wchan", 512)
    if isinstance(wchan, Unread):
        return wchan
    wchan = wchan.strip()
    if wchan == "0":  # running, or no ptrace access: then syscall (0400) says which
        tried = read_bytes(procfs, pid, f"task/{tid}/syscall", 512)
        return tried if isinstance(tried, Unread) else None
    if "pipe_write" not in wchan and wchan not in _ROOM_WAITS:
        return None
    compat = tasks.is_compat(procfs / str(pid) / "exe", machine)  # i386 numbers on x86_64?
    text = read_text(procfs, pid, f"task/{tid}/syscall", 512)
    if isinstance(text, Unread):
        return text
    hit = tasks.pipe_write(text, machine, compat)
    return None if hit is None else _Writer(pid, int(tid), hit[1], hit[0], wchan)


def _blocked_writers(procfs: Path, machine: str) -> tuple[list[_Writer], list[int]]:
    """Every thread of every process asleep in a pipe write; the pids whose threads' system
    calls could not be read (another user's, without CAP_SYS_PTRACE)."""
    writers: list[_Writer] = []
    blind: list[int] = []
    for pid in pids(procfs):
        tids = listdir(procfs, pid, "task")
        for tid in [] if isinstance(tids, Unread) else tids:
            hit = _task_writer(procfs, pid, tid, machine)
            if isinstance(hit, Unread):
                if hit.hidden and not _kernel_thread(procfs, pid):
                    blind.append(pid)
                    break
                continue
            if hit is not None:
                writers.append(hit)
    return writers, blind


class _Ends(NamedTuple):
    ends: dict[tuple[int, int], list[tuple[int, int, bool]]]  # (dev, ino) -> (pid, fd, readable)
    unreadable: list[int]  # pids whose fds could not be listed


def _pipe_ends(procfs: Path, wanted: set[tuple[int, int]]) -> _Ends:
    """Every fd of every process we can read on one of the wanted pipes or FIFOs."""
    inodes = {ino for _, ino in wanted}
    ends: dict[tuple[int, int], list[tuple[int, int, bool]]] = {}
    unreadable: list[int] = []
    for pid in pids(procfs):
        fds = listdir(procfs, pid, "fd")
        if isinstance(fds, Unread):
            if fds.hidden and not _kernel_thread(procfs, pid):
                unreadable.append(pid)
            continue
        for fd in fds:
            end = _pipe_end(procfs, pid, fd, inodes, wanted)
            if isinstance(end, Unread):
                if end.hidden:
                    unreadable.append(pid)
                    break
                continue
            if end is not None:
                ends.setdefault(end[0], []).append((pid, int(fd), end[1]))
    return _Ends(ends, sorted(unreadable))


def _pipe_end(
    procfs: Path, pid: int, fd: str, inodes: set[int], wanted: set[tuple[int, int]]
) -> tuple[tuple[int, int], bool] | Unread | None:
    """((dev, ino), readable) when the fd is an end of a wanted pipe or FIFO."""
    target = fd_link(procfs, pid, f"fd/{fd}")
    if isinstance(target, Unread) or not target.startswith(("pipe:[", "/")):
        return target if isinstance(target, Unread) else None  # a socket, an anon inode
    if target.startswith("pipe:[") and target[6:-1].isdigit() and int(target[6:-1]) not in inodes:
        return None
    st = fd_stat(procfs, pid, f"fd/{fd}")
    if isinstance(st, Unread) or (st.st_dev, st.st_ino) not in wanted:
        return st if isinstance(st, Unread) else None
    info = read_text(procfs, pid, f"fdinfo/{fd}", 512)
    if isinstance(info, Unread):
        return info
    try:
        readable = _fd_flags(info) & os.O_ACCMODE in (os.O_RDONLY, os.O_RDWR)
    except (ValueError, IndexError):
        return None
    return (st.st_dev, st.st_ino), readable


def _fd_flags(fdinfo: str) -> int:
    for line in fdinfo.splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0


def _is_orphan(pid: int, unit: str | None, procfs: Path) -> bool:
    """Reparented to init or a subreaper (a systemd manager) — and not its unit's main process.

    Every service's main process is a child of PID 1 too; systemd (over D-Bus) says which pid
    that is. Without an answer, a child of init or of a manager counts as orphaned.
    """
    text = read_text(procfs, pid, "stat")
    try:
        ppid = -1 if isinstance(text, Unread) else int(stat_fields(text)[1])  # field 4
    except (ValueError, IndexError):
        return False
    comm = read_text(procfs, ppid, "comm") if ppid > 1 else "systemd"
    if ppid < 0 or isinstance(comm, Unread) or comm.strip() != "systemd":
        return False  # gone, hidden, or a child of an ordinary parent
    if unit is not None and unit.endswith(".service"):
        from ..systemd.bus import main_pid  # noqa: PLC0415  (only for the rare stuck process)

        return main_pid(unit) != pid
    return True


def _pipe_of(w: _Writer, procfs: Path) -> tuple[tuple[int, int], str] | None:
    """((st_dev, st_ino), target) of the pipe or FIFO the thread is blocked writing to."""
    fd = f"task/{w.tid}/fd/{w.fd}"
    target, st = fd_link(procfs, w.pid, fd), fd_stat(procfs, w.pid, fd)
    if isinstance(target, Unread) or isinstance(st, Unread) or not stat.S_ISFIFO(st.st_mode):
        return None
    return (st.st_dev, st.st_ino), target


def _unknown_why(unreadable: list[int], hidden: str | None) -> str | None:
    if unreadable:
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        pids = ", ".join(map(str, unreadable[:5]))
        return f"the fds of pid {pids}{more} could not be read (run doctor as root)"
    return hidden


def _judge(
    w: _Writer,
    pipe: tuple[tuple[int, int], str],
    found: _Ends,
    *,
    hidden: str | None,
    procfs: Path,
) -> StuckPipe | None:
    """The finding on a blocked writer, or None when another process can drain its pipe."""
    key, target = pipe
    holders = found.ends.get(key, [])
    if any(p != w.pid and readable for p, _, readable in holders):
        return None  # someone else can drain it: healthy, if slow
    own = [(f, readable) for p, f, readable in holders if p == w.pid]
    unreadable = [p for p in found.unreadable if p != w.pid]
    unknown = _unknown_why(unreadable, hidden)
    holds = any(readable for _, readable in own)
    unit = unit_of_pid(w.pid, procfs)
    command = process_comm(w.pid, procfs)
    return StuckPipe(
        pid=w.pid, command=command,
        fds=[w.fd, *sorted({f for f, _ in own if f != w.fd})],
        read_fds=sorted({f for f, readable in own if readable}),
        inode=key[1], unit=unit, orphaned=_is_orphan(w.pid, unit, procfs),
        holds_read_end=holds, wchan=w.wchan, tid=w.tid, syscall=w.syscall, target=target,
        reader=UNKNOWN if unknown else (SELF if holds else NONE),
        unreadable=unreadable, unknown=unknown,
    )  # fmt: skip


def find_stuck_pipes(procfs: Path = Path("/proc"), machine: str | None = None) -> PipeScan:
    """Threads blocked writing to a pipe or FIFO whose read end no other process holds."""
    machine = machine or platform.machine()
    notes = []
    if machine not in tasks.PIPE_WRITE_MACHINES:
        notes.append(f"stuck pipes: the system call numbers of write(2) on {machine} are not known")
    writers, blind = _blocked_writers(procfs, machine)
    if blind:
        more = f" and {len(blind) - 5} more" if len(blind) > 5 else ""
        notes.append(
            f"stuck pipes: cannot see what pid {', '.join(map(str, blind[:5]))}{more} "
            f"{'is' if len(blind) == 1 else 'are'} blocked in (needs root): a stuck writer "
            "there is missed"
        )
    pipes: dict[tuple[int, tuple[int, int]], tuple[_Writer, str]] = {}
    for w in sorted(writers):  # one finding a process and pipe: its first thread blocked
        if (p := _pipe_of(w, procfs)) is not None:
            pipes.setdefault((w.pid, p[0]), (w, p[1]))
    if not pipes:
        return PipeScan([], notes)
    ends = _pipe_ends(procfs, {key for _, key in pipes})
    hidden = hidepid_blinds(procfs)
    found = []
    for (_, key), (w, target) in sorted(pipes.items()):
        if (finding := _judge(w, (key, target), ends, hidden=hidden, procfs=procfs)) is not None:
            found.append(finding)
    return PipeScan(found, notes)


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
    hooked = _hook_dropin(unit, dirs)
    if hooked is None:
        return NO_HOOK, None
    if not hooked:
        return UNSAFE_HOOK, None
    views, why = unitctx.views(unit, dirs, reader or unitctx.read)
    if why is not None:
        return None, f"cannot check the file-system view its hook runs in: {why}"
    problems = [f"{v.unit}: {p}" for v in views for p in v.problems()]
    if problems:
        return VIEW_PROBLEM + "; ".join(problems), None
    if any(v.need_reload for v in views):
        return None, "systemd has not loaded its latest unit files: run systemctl daemon-reload"
    return None, None


def _hook_dropin(unit: str, dirs: Iterable[Path]) -> bool | None:
    """Whether the unit's drop-ins hook it through the trampoline: True; False as soon as one
    hook line does not (an older install-hook's); None when no drop-in hooks it."""
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
                        return False
                    found = True
    return True if found else None


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


class Seen(NamedTuple):
    """What one look at the IPC tables and the policy gives every check (cmd_doctor reads it
    once; a policy that cannot be read leaves stale, verdicts, policy and posix_stale None)."""

    objects: Sequence[IpcObject]
    stale: Sequence[IpcObject] | None = None  # what `clean` would free now
    verdicts: Mapping[tuple[IpcKind, int], str] | None = None
    policy: Policy | None = None
    posix_stale: Sequence[PosixObject] | None = None


class Found(NamedTuple):
    findings: Sequence[Any]
    notes: Sequence[str] = ()  # what the check could not see


class Check(NamedTuple):
    """One of doctor's checks, a row (systemd-analyze security's assessor table): what it
    reports, how it looks, and how one finding is judged, put into --json and shown."""

    field: str  # its Report field
    key: str  # its key in the --json document
    reports: str  # what it reports
    assess: Callable[[Seen], Found]
    problem: Callable[[Any], bool]  # whether a finding makes doctor unhealthy (exit 1)
    as_json: Callable[[Any], Any]
    lines: Callable[[Sequence[Any], Style], list[str]]  # its part of the text


def _assess_limits(seen: Seen) -> Found:
    posix, notes = posix_rows(seen.posix_stale)
    return Found(limit_rows(seen.objects, read_limits(), seen.stale) + posix, notes)


def _assess_pipes(seen: Seen) -> Found:
    scan = find_stuck_pipes()
    return Found(scan.found, scan.notes)


def _assess_unreachable(seen: Seen) -> Found:
    return Found(unreachable_queues(seen.objects, seen.verdicts))


def _assess_hooks(seen: Seen) -> Found:
    if seen.policy is None:
        return Found([])
    return Found(missing_hooks(seen.policy), unserved_note(seen.policy))


def unserved_note(policy: Policy, socket_path: str | None = None) -> list[str]:
    """When owners are bound to units and no hook server listens: their hooks each start an
    interpreter (README "The hook server")."""
    from ..hook.serve import SOCKET_PATH, unserved  # noqa: PLC0415

    if not any(o.unit for o in policy.owners):
        return []
    why = unserved(socket_path or SOCKET_PATH)
    return [] if why is None else [why]


def _hook_line(h: Mapping[str, str]) -> str:
    if "problem" in h:
        return f"UNSAFE HOOK: owner {h['owner']}: {h['unit']}: {h['problem']}: {h['fix']}"
    if "note" in h:
        return f"note: owner {h['owner']}: {h['unit']}: {h['note']}"
    return f"hint: owner {h['owner']}: {h['unit']} has no ipcjanitor hook: {h['fix']}"


# In the order the text shows them; a fifth check is one more row.
CHECKS: tuple[Check, ...] = (
    Check("limits", "limits", "IPC tables, /dev/shm and the queues near their limit",
          _assess_limits, lambda r: r.problem, lambda r: as_json(r, LIMIT_COLUMNS),
          lambda rows, style: [render(rows, LIMIT_COLUMNS, style), ""]),
    Check("stuck_pipes", "stuck_pipes", "processes blocked writing to a pipe nobody drains",
          _assess_pipes, lambda s: s.problem, lambda s: s._asdict(),
          lambda found, _: [_stuck_line(s) for s in found] or ["stuck pipes: none"]),
    Check("unreachable", "unreachable_queues", "queues nothing can ever send to or receive from",
          _assess_unreachable, lambda q: True, lambda q: q._asdict(),
          lambda found, _: [q.line() for q in found]),
    Check("hooks_missing", "hooks_missing", "owners' units without a (safe) ipcjanitor hook",
          _assess_hooks, lambda h: "problem" in h, lambda h: h,
          lambda found, _: [_hook_line(h) for h in found]),
)  # fmt: skip
JSON_ORDER = ("limits", "stuck_pipes", "hooks_missing", "unreachable_queues")  # as released


class Report(NamedTuple):
    limits: Sequence[LimitRow]
    stuck_pipes: Sequence[StuckPipe]
    hooks_missing: Sequence[dict[str, str]]
    notes: Sequence[str]
    unreachable: Sequence[UnreachableQueue] = ()

    def _found(self, check: Check) -> Sequence[Any]:
        found: Sequence[Any] = getattr(self, check.field)
        return found

    @property
    def healthy(self) -> bool:
        return not any(c.problem(f) for c in CHECKS for f in self._found(c))

    def json(self) -> str:
        by_key = {c.key: [c.as_json(f) for f in self._found(c)] for c in CHECKS}
        doc: dict[str, Any] = {key: by_key[key] for key in JSON_ORDER}
        doc |= {"notes": list(self.notes), "healthy": self.healthy}
        return json.dumps(doc, indent=2)

    def text(self, style: Style = PLAIN) -> str:
        lines = [line for c in CHECKS for line in c.lines(self._found(c), style)]
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append("healthy" if self.healthy else "PROBLEMS FOUND")
        return "\n".join(lines)


def run_checks(seen: Seen, notes: Sequence[str] = ()) -> Report:
    """Every check of CHECKS on what was seen: one Report, the checks' notes after `notes`."""
    found = {c.field: c.assess(seen) for c in CHECKS}
    every = [*notes, *(n for f in found.values() for n in f.notes)]
    return Report(**{field: f.findings for field, f in found.items()}, notes=every)


def _stuck_line(s: StuckPipe) -> str:
    fds = ",".join(map(str, s.fds))
    thread = f" thread {s.tid}" if s.tid != s.pid else ""
    how = "writing" if s.syscall in (tasks.WRITE, tasks.WRITEV) else f"in {s.syscall} writing"
    own = f"holds the read end itself (fd {','.join(map(str, s.read_fds))})"
    if s.reader == UNKNOWN:
        who = (own + "; " if s.holds_read_end else "") + (
            f"cannot tell whether another process reads it: {s.unknown}"
        )
    else:
        who = own if s.holds_read_end else "no process holds the read end"
    orphan = ", ORPHANED" if s.orphaned else ""
    label = "STUCK PIPE" if s.problem else "MAYBE STUCK PIPE"
    return (
        f"{label}: pid {s.pid} ({s.command}){thread} blocked {how} fd {fds} {s.target}, "
        f"unit {s.unit or '-'}{orphan}; {who}"
    )

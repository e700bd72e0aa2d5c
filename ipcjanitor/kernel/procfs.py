"""The one reader of /proc/PID: stat, status, cgroup, maps, fd and task/*/syscall.

Every OS error reading a process's file is translated here, once, into an Unread value:
*gone* (ENOENT, ESRCH: it exited, or never was) or *hidden* (EACCES, EPERM and any other
error: it may exist, and we may not read it). Callers decide what a gone or hidden process
means for them; none of them catches an OSError about a process itself.

Which procfs is read is a Procfs value, and whether it is the running kernel's own is a
flag in it (`live`), never a comparison with Path("/proc"): only LIVE is live, so a test's
captured tree, even one mounted at /proc, never asks the kernel (kill(0), the cgroup tree,
*_STAT_ANY) about the pids it holds. Nor is a captured tree read with the live kernel's
view of it: its own self/ (mountinfo, status, ns/pid) says how it was mounted, who read it
and from which pid namespace (processes.py). Only the run lock names the live IPC namespace
(engine/lock.py): it guards the running kernel, whatever procfs a run reads.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from ..model import Pid
from .cgroups import cgroup_unit_name

GONE_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH})


class Procfs(NamedTuple):
    """A procfs: where it is, and whether it is the running kernel's own (`live`)."""

    root: Path
    live: bool = False


LIVE = Procfs(Path("/proc"), live=True)


def of(procfs: Path | Procfs) -> Procfs:
    """A Procfs as given; a bare path is a captured tree, never the live kernel's."""
    return procfs if isinstance(procfs, Procfs) else Procfs(procfs)


class Unread(NamedTuple):
    """Why a process's file was not read."""

    gone: bool  # it exited (or never was): nothing there to doubt
    why: str  # the error's text, for a note: "Permission denied"

    @property
    def hidden(self) -> bool:
        return not self.gone


def unread(exc: OSError) -> Unread:
    return Unread(exc.errno in GONE_ERRNOS, exc.strerror or str(exc))


def pids(root: Path) -> Iterator[Pid]:
    """Every pid the procfs lists (its numeric entries); OSError if root cannot be listed."""
    for entry in os.scandir(root):
        if entry.name.isdigit():
            yield int(entry.name)


def read_bytes(root: Path, pid: Pid | str, name: str, size: int = -1) -> bytes | Unread:
    """/proc/PID/NAME (NAME may be "task/TID/syscall"): at most `size` bytes, one read(2);
    with no size the whole file, read(2) until EOF: no file object, whose fstat and lseek
    per open a pass over every process's maps (kernel/holders.py) would pay."""
    try:
        fd = os.open(f"{os.fspath(root)}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if size >= 0:
                return os.read(fd, size)
            chunks = []
            while chunk := os.read(fd, 1 << 17):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as exc:
        return unread(exc)


def read_text(root: Path, pid: Pid | str, name: str, size: int = -1) -> str | Unread:
    """/proc/PID/NAME as text (bytes that are not UTF-8 kept as surrogate escapes)."""
    raw = read_bytes(root, pid, name, size)
    return raw if isinstance(raw, Unread) else raw.decode(errors="surrogateescape")


def listdir(root: Path, pid: Pid | str, name: str) -> list[str] | Unread:
    """The entries of /proc/PID/NAME ("fd", "task", "task/TID/fd")."""
    try:
        return os.listdir(f"{os.fspath(root)}/{pid}/{name}")
    except OSError as exc:
        return unread(exc)


def fd_link(root: Path, pid: Pid, fd: str) -> str | Unread:
    """Where /proc/PID/FD ("fd/3", "task/TID/fd/3") leads: a path, "pipe:[INODE]", ..."""
    try:
        return os.readlink(f"{os.fspath(root)}/{pid}/{fd}")
    except OSError as exc:
        return unread(exc)


def fd_stat(root: Path, pid: Pid, fd: str) -> os.stat_result | Unread:
    """The stat of the file the fd is open on (through the /proc link)."""
    try:
        return os.stat(f"{os.fspath(root)}/{pid}/{fd}")
    except OSError as exc:
        return unread(exc)


def task_links(root: Path, pid: Pid) -> int | Unread:
    """The link count of /proc/PID/task: 2 + the number of threads on the live kernel (one
    stat, no listing); a captured tree's directory may count otherwise (btrfs: 1)."""
    try:
        return os.stat(f"{os.fspath(root)}/{pid}/task").st_nlink
    except OSError as exc:
        return unread(exc)


def status_field(text: str, name: str) -> str | None:
    """One field of a /proc/PID/status text ("CapEff", "Uid"), without its label."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def cgroup_units(text: str) -> frozenset[str]:
    """Every unit name on the cgroup paths of a /proc/PID/cgroup text (each hierarchy's)."""
    names: set[str] = set()
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        names.update(cgroup_unit_name(c) for c in parts[2].split("/") if "." in c)
    return frozenset(names)


def units_by_pid(root: Path, exclude: Iterable[Pid] = ()) -> Iterator[tuple[Pid, frozenset[str]]]:
    """(pid, the units on its cgroup paths) for every process (but `exclude`) whose cgroup
    file reads; one that is gone or hidden is passed over (the caller's blindness rules say
    what that costs)."""
    skip = frozenset(exclude)
    for pid in pids(root):
        if pid in skip:
            continue
        text = read_text(root, pid, "cgroup")
        if not isinstance(text, Unread):
            yield pid, cgroup_units(text)


def task_syscalls(root: Path, pid: Pid) -> Iterator[tuple[str, str | Unread]]:
    """(tid, its /proc/PID/task/TID/syscall line or why not) for every thread of the process;
    nothing when the process itself is gone, one ("", Unread) when its tasks are hidden."""
    tids = listdir(root, pid, "task")
    if isinstance(tids, Unread):
        if tids.hidden:
            yield "", tids
        return
    for tid in tids:
        raw = read_bytes(root, pid, f"task/{tid}/syscall", 512)
        yield tid, raw if isinstance(raw, Unread) else raw.decode("ascii", "replace")

"""Who uses a POSIX object: mappings, open fds and locks, matched by (st_dev, st_ino).

A POSIX object records no pid. Its users show only in the processes themselves: a mapping
in /proc/PID/maps (a named semaphore's users are visible only this way), an fd that stats
to it in /proc/PID/fd (a queue's users and its notification registrant only this way), a
lock in /proc/locks (FLOCK, POSIX or OFD; an OFD lock's pid reads -1 and still holds it).
All three are read once per run for every candidate together: the cost is one pass over
the visible processes, whatever the number of objects.

A thread may have an fd table of its own (it called unshare(CLONE_FILES), or was cloned
without CLONE_FILES): what it opened shows only in /proc/PID/task/TID/fd. A process with
more than one thread (/proc/PID/task's link count: one stat) has each other thread's table
compared with those already read (kcmp KCMP_FILES) and read when it differs or cannot be
compared; a single-threaded process costs that one stat.

What cannot be read is blindness, never absence: a process whose maps or fds we may not
read, hidepid, a pid namespace that is not the host's (its /proc/locks omits the locks of
processes it cannot see) make `blind` say why, and no object is then proven unused. Every
file is read through kernel/procfs.py, which says once whether what failed is *gone* (it
holds nothing any more) or *hidden* (a doubt).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from ..model import Pid
from .processes import process_comm, visibility
from .procfs import (
    LIVE,
    Procfs,
    Unread,
    fd_stat,
    listdir,
    of,
    pids,
    read_bytes,
    task_links,
)
from .tasks import same_fd_table

Identity = tuple[int, int]  # (st_dev, st_ino)
_LOCK_MODES = {
    ("FLOCK", "READ"): "LOCK_SH",
    ("FLOCK", "WRITE"): "LOCK_EX",
    ("POSIX", "READ"): "POSIX read lock",
    ("POSIX", "WRITE"): "POSIX write lock",
    ("OFDLCK", "READ"): "OFD read lock",
    ("OFDLCK", "WRITE"): "OFD write lock",
}
_SHOWN_UNREADABLE = 3  # pids named in the blindness reason; the rest are counted
_ONE_THREAD = 3  # /proc/PID/task's link count on the live kernel: 2 + the threads
_TABLES_COMPARED = 8  # fd tables a thread's is compared with (kcmp) before it is just read


class Holders(NamedTuple):
    """The holders of each wanted object, and why some holder may have escaped us."""

    by_identity: Mapping[Identity, tuple[str, ...]]  # "mapped by pid 812 (php-fpm)", ...
    blind: str | None  # None: every process was read, and we see every process
    processes: int = 0  # how many processes were read


def _dev_text(dev: int) -> str:
    """st_dev as /proc/PID/maps and /proc/locks print it: hex major:minor, two digits each."""
    return f"{os.major(dev):02x}:{os.minor(dev):02x}"


class _Scan:
    def __init__(self, wanted: Iterable[Identity], procfs: Procfs, exclude: frozenset[int]) -> None:
        self.wanted = frozenset(wanted)
        # /proc/locks' spelling of each device (a few devices, however many objects)
        self.devs = {_dev_text(dev): dev for dev in {d for d, _ in self.wanted}}
        self.dev_set = frozenset(self.devs.values())
        # a maps line names its device as " MAJ:MIN ": only lines holding one of ours are
        # split, each found by a search in C
        self.needles = {f" {text} ".encode(): dev for text, dev in self.devs.items()}
        self.dev_needles = list(self.needles)
        self.procfs = procfs
        self.root = procfs.root
        self.exclude = exclude
        self.found: dict[Identity, list[str]] = {}
        self.unreadable: list[str] = []
        self.comms: dict[Pid, str] = {}
        self.read = 0

    def hold(self, identity: Identity, how: str) -> None:
        held = self.found.setdefault(identity, [])
        if how not in held:
            held.append(how)

    def comm(self, pid: Pid) -> str:
        name = self.comms.get(pid)
        if name is None:  # one read per holding process, however many objects it holds
            name = self.comms[pid] = process_comm(pid, self.procfs)
        return name

    def doubt(self, who: str, why: Unread) -> None:
        """What is hidden may hold anything: a doubt. What is gone holds nothing."""
        if why.hidden:
            self.unreadable.append(f"{who} ({why.why})")

    def maps_and_fds(self, pid: Pid, base: str) -> tuple[bytes, list[str]] | Unread:
        """The maps and fd names under /proc/PID/BASE ("" or "task/TID/")."""
        maps = read_bytes(self.root, pid, f"{base}maps")
        if isinstance(maps, Unread):
            return maps
        fds = listdir(self.root, pid, f"{base}fd")
        return fds if isinstance(fds, Unread) else (maps, fds)

    def process(self, pid: Pid) -> None:
        got = self.maps_and_fds(pid, "")
        if isinstance(got, Unread):
            return self.doubt(f"pid {pid}", got)  # gone: exited meanwhile, holds nothing
        self.read += 1
        maps, fds = got
        self.maps(pid, maps)
        self.fds(pid, "fd", fds)
        if not maps:  # a kernel thread, or a leader that ended while other threads run on
            self.threads(pid)
        elif self.several_threads(pid):
            self.own_fd_tables(pid)
        return None

    def several_threads(self, pid: Pid) -> bool:
        """False only when /proc/PID/task's link count says one thread (a stat, no listing);
        a count that cannot be read is a doubt."""
        links = task_links(self.root, pid)
        if isinstance(links, Unread):
            self.doubt(f"threads of pid {pid}", links)
            return False
        return links != _ONE_THREAD

    def own_fd_tables(self, pid: Pid) -> None:
        """The fds of each thread whose fd table is not one already read (it called
        unshare(CLONE_FILES), or was cloned without CLONE_FILES): its maps are the
        process's, its fds its own. A thread whose table cannot be compared is read; one
        whose table cannot be read is a doubt."""
        tids = listdir(self.root, pid, "task")
        if isinstance(tids, Unread):
            return self.doubt(f"threads of pid {pid}", tids)
        tables: list[int] = [pid]  # one task of each fd table read: the leader's first
        for tid in tids:
            if not tid.isdigit() or int(tid) == pid or self.shares_one(tables, int(tid)):
                continue
            fds = listdir(self.root, pid, f"task/{tid}/fd")
            if isinstance(fds, Unread):
                self.doubt(f"the fd table of thread {tid} of pid {pid}", fds)  # gone: ended
                continue
            self.fds(pid, f"task/{tid}/fd", fds)
            tables.append(int(tid))
        return None

    def shares_one(self, tables: list[int], tid: int) -> bool:
        """The thread shares the fd table of one of these tasks (kcmp says so); False when
        it has its own, or when that cannot be told (then its table is read)."""
        for task in tables[:_TABLES_COMPARED]:
            same = same_fd_table(self.procfs, task, tid)
            if same is None:
                return False
            if same:
                return True
        return False

    def threads(self, pid: Pid) -> None:
        """A zombie thread-group leader shows no maps and no fds under /proc/PID; its live
        threads show the process's under /proc/PID/task/TID (each thread its own fd table,
        for a thread cloned without CLONE_FILES)."""
        tids = listdir(self.root, pid, "task")
        if isinstance(tids, Unread):
            return self.doubt(f"threads of pid {pid}", tids)
        for tid in tids:
            if tid == str(pid):
                continue
            got = self.maps_and_fds(pid, f"task/{tid}/")
            if isinstance(got, Unread):
                self.doubt(f"thread {tid} of pid {pid}", got)  # gone: the thread ended
                continue
            self.maps(pid, got[0])
            self.fds(pid, f"task/{tid}/fd", got[1])
        return None

    def maps(self, pid: Pid, text: bytes) -> None:
        """Only the lines naming one of our devices are split (found by a search in C)."""
        for needle in self.dev_needles:
            at = text.find(needle)
            while at >= 0:
                start = text.rfind(b"\n", 0, at) + 1
                end = text.find(b"\n", at)
                end = len(text) if end < 0 else end
                fields = text[start:end].split(None, 5)
                if len(fields) >= 5 and fields[3] == needle[1:-1] and fields[4].isdigit():
                    identity = (self.needles[needle], int(fields[4]))
                    if identity in self.wanted:
                        self.hold(identity, f"mapped by pid {pid} ({self.comm(pid)})")
                at = text.find(needle, end)

    def fds(self, pid: Pid, fd_dir: str, fds: list[str]) -> None:
        """One stat per fd (sockets, pipes and anon inodes included: a readlink to sort them
        out first would cost as much as the stat it saves); fd_dir is "fd" or "task/TID/fd"."""
        root = self.root
        # a thread's own table: /proc/PID/fd does not show its fds, /proc/PID/task/TID/fd does
        where = "" if fd_dir == "fd" else f"thread {fd_dir.split('/')[1]} of "
        for fd in fds:
            st = fd_stat(root, pid, f"{fd_dir}/{fd}")
            if isinstance(st, Unread):
                self.doubt(f"fd {fd} of {where}pid {pid}", st)  # gone: closed meanwhile
                continue
            if st.st_dev in self.dev_set and (st.st_dev, st.st_ino) in self.wanted:
                self.hold((st.st_dev, st.st_ino), f"fd {fd} of {where}pid {pid} ({self.comm(pid)})")

    def locks(self) -> None:
        try:
            text = (self.root / "locks").read_text()
        except OSError as exc:
            self.unreadable.append(f"{self.root}/locks ({exc.strerror})")
            return
        for line in text.splitlines():
            fields = line.split()
            waiting = len(fields) > 1 and fields[1] == "->"
            if waiting:
                del fields[1]
            if len(fields) < 6:
                continue
            kind, rw, pid, where = fields[1], fields[3], fields[4], fields[5]
            dev_text, _, ino = where.rpartition(":")
            dev = self.devs.get(dev_text)
            if dev is None or not ino.isdigit() or (dev, int(ino)) not in self.wanted:
                continue
            if pid.lstrip("-").isdigit() and int(pid) in self.exclude:
                continue
            mode = _LOCK_MODES.get((kind, rw), f"{kind} {rw} lock")
            who = (
                "pid -1 (an OFD lock: whoever holds that open file)"
                if pid == "-1"
                else (f"pid {pid}")
            )
            how = f"waiting for {mode}: {who}" if waiting else f"{mode} by {who}"
            self.hold((dev, int(ino)), how)


def mapped_files(processes: Iterable[Pid], dev: int, procfs: Path | Procfs = LIVE) -> set[Identity]:
    """The (dev, ino) of every file on device `dev` that these processes map (/proc/PID/maps);
    a process whose maps cannot be read (exited, not ours to read) adds nothing: a hint."""
    needle = f" {_dev_text(dev)} ".encode()
    found: set[Identity] = set()
    root = of(procfs).root
    for pid in processes:
        text = read_bytes(root, pid, "maps")
        if isinstance(text, Unread) or needle not in text:
            continue
        for raw in text.splitlines():
            fields = raw.split(None, 5)
            if len(fields) >= 5 and fields[3] == needle[1:-1] and fields[4].isdigit():
                found.add((dev, int(fields[4])))
    return found


def scan_holders(
    wanted: Iterable[Identity], procfs: Path | Procfs = LIVE, exclude: Iterable[int] = ()
) -> tuple[dict[Identity, tuple[str, ...]], list[str], int]:
    """Holders of each wanted identity, what could not be read, and processes read."""
    scan = _Scan(wanted, of(procfs), frozenset(exclude))
    if not scan.wanted:
        return {}, [], 0
    try:
        every = sorted(pids(scan.root))
    except OSError as exc:
        return {}, [f"{scan.root} ({exc.strerror})"], 0
    for pid in every:
        if pid not in scan.exclude:
            scan.process(pid)
    scan.locks()
    return {k: tuple(v) for k, v in scan.found.items()}, scan.unreadable, scan.read


def read_holders(
    wanted: Iterable[Identity],
    procfs: Path | Procfs = LIVE,
    exclude: Iterable[int] = (),
    *,
    pid_namespace_complete: bool = False,
) -> Holders:
    """Every visible process's maps and fds and /proc/locks, once, for all wanted objects.

    ipcjanitor's own pid is always excluded (its own fds and locks are no evidence of use).
    """
    seen = visibility(procfs, pid_namespace_complete)
    found, unreadable, read = scan_holders(wanted, procfs, {os.getpid(), *exclude})
    blind = [seen.blind] if seen.blind else []
    if unreadable:
        shown = ", ".join(unreadable[:_SHOWN_UNREADABLE])
        more = len(unreadable) - _SHOWN_UNREADABLE
        blind.append(
            f"cannot read the maps or fds of {shown}"
            + (f" and {more} more" if more > 0 else "")
            + ": a holder there would be missed"
        )
    return Holders(found, "; ".join(blind) or None, read)

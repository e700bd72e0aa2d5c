"""Who uses a POSIX object: mappings, open fds and locks, matched by (st_dev, st_ino).

A POSIX object records no pid. Its users show only in the processes themselves: a mapping
in /proc/PID/maps (a named semaphore's users are visible only this way), an fd that stats
to it in /proc/PID/fd (a queue's users and its notification registrant only this way), a
lock in /proc/locks (FLOCK, POSIX or OFD; an OFD lock's pid reads -1 and still holds it).
All three are read once per run for every candidate together: the cost is one pass over
the visible processes, whatever the number of objects.

What cannot be read is blindness, never absence: a process whose maps or fds we may not
read, hidepid, a pid namespace that is not the host's (its /proc/locks omits the locks of
processes it cannot see) make `blind` say why, and no object is then proven unused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from ..escape import safe_name
from .processes import process_comm, visibility

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
_READ = os.O_RDONLY | os.O_CLOEXEC
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Holders(NamedTuple):
    """The holders of each wanted object, and why some holder may have escaped us."""

    by_identity: Mapping[Identity, tuple[str, ...]]  # "mapped by pid 812 (php-fpm)", ...
    blind: str | None  # None: every process was read, and we see every process
    processes: int = 0  # how many processes were read


def _dev_text(dev: int) -> str:
    """st_dev as /proc/PID/maps and /proc/locks print it: hex major:minor, two digits each."""
    return f"{os.major(dev):02x}:{os.minor(dev):02x}"


class _Scan:
    def __init__(self, wanted: Iterable[Identity], procfs: Path, exclude: frozenset[int]) -> None:
        self.wanted = frozenset(wanted)
        self.devs = {_dev_text(dev): dev for dev, _ in self.wanted}  # /proc/locks' spelling
        self.dev_set = frozenset(self.devs.values())
        # a maps line names its device as " MAJ:MIN ": only lines holding one of ours are
        # split, each found by a search in C
        self.needles = {f" {text} ".encode(): dev for text, dev in self.devs.items()}
        self.dev_needles = list(self.needles)
        self.procfs = procfs
        self.proc = os.fspath(procfs)  # strings, not Paths: this runs per process and fd
        self.exclude = exclude
        self.found: dict[Identity, list[str]] = {}
        self.unreadable: list[str] = []
        self.comms: dict[str, str] = {}
        self.read = 0
        self.pid_dir: tuple[str, int] | None = None  # the /proc/PID being read, open

    def hold(self, identity: Identity, how: str) -> None:
        held = self.found.setdefault(identity, [])
        if how not in held:
            held.append(how)

    def comm(self, pid: str) -> str:
        name = self.comms.get(pid)
        if name is None:  # one read per holding process, however many objects it holds
            name = self.comms[pid] = self._read_comm(pid)
        return name

    def _read_comm(self, pid: str) -> str:
        """From the open /proc/PID of the process being read (no second pid lookup), else
        by its path (a thread's holder)."""
        if self.pid_dir is None or self.pid_dir[0] != pid:
            return process_comm(int(pid), Path(self.proc))
        try:
            fd = os.open("comm", _READ, dir_fd=self.pid_dir[1])
        except OSError:
            return "?"
        try:
            raw = os.read(fd, 256)
        except OSError:
            return "?"
        finally:
            os.close(fd)
        return safe_name(raw.decode(errors="surrogateescape").strip())

    def process(self, pid: str) -> None:
        """Its maps and fds through one open /proc/PID: the pid is looked up once, not once
        per fd (and every read is of that one process, even if the pid is reused meanwhile)."""
        try:
            dirfd = os.open(f"{self.proc}/{pid}", _DIRECTORY)
        except (FileNotFoundError, ProcessLookupError):
            return  # exited meanwhile: it holds nothing any more
        except OSError as exc:
            self.unreadable.append(f"pid {pid} ({exc.strerror})")
            return
        self.pid_dir = (pid, dirfd)
        try:
            self._process_at(pid, dirfd)
        finally:
            self.pid_dir = None
            os.close(dirfd)

    def _process_at(self, pid: str, dirfd: int) -> None:
        try:
            maps = _read_all("maps", dirfd)
            fd_dir = os.open("fd", _DIRECTORY, dir_fd=dirfd)
        except (FileNotFoundError, ProcessLookupError):
            return  # exited meanwhile: it holds nothing any more
        except OSError as exc:
            self.unreadable.append(f"pid {pid} ({exc.strerror})")
            return
        try:
            fds = os.listdir(fd_dir)
            self.read += 1
            self.maps(pid, maps)
            self.fds(pid, fd_dir, fds)
        except (FileNotFoundError, ProcessLookupError):
            return
        except OSError as exc:
            self.unreadable.append(f"pid {pid} ({exc.strerror})")
            return
        finally:
            os.close(fd_dir)
        if not maps:  # a kernel thread, or a leader that ended while other threads run on
            self.threads(pid, f"{self.proc}/{pid}/task")

    def threads(self, pid: str, task_dir: str) -> None:
        """A zombie thread-group leader shows no maps and no fds under /proc/PID; its live
        threads show the process's under /proc/PID/task/TID (each thread its own fd table,
        for a thread cloned without CLONE_FILES)."""
        try:
            tids = [t for t in os.listdir(task_dir) if t != pid]
        except OSError:
            return  # exited meanwhile
        for tid in tids:
            base = f"{task_dir}/{tid}"
            try:
                with open(f"{base}/maps", "rb") as f:
                    maps = f.read()
                fds = os.listdir(f"{base}/fd")
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended meanwhile
            except OSError as exc:
                self.unreadable.append(f"thread {tid} of pid {pid} ({exc.strerror})")
                continue
            self.maps(pid, maps)
            self.fds(pid, f"{base}/fd", fds)

    def maps(self, pid: str, text: bytes) -> None:
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

    def fds(self, pid: str, fd_dir: str | int, fds: list[str]) -> None:
        """One stat per fd (sockets, pipes and anon inodes included: a readlink to sort them
        out first would cost as much as the stat it saves); fd_dir a path, or an open fd of
        that directory (each stat then resolves one name, not /proc/PID/fd/N)."""
        for fd in fds:
            try:
                if isinstance(fd_dir, int):
                    st = os.stat(fd, dir_fd=fd_dir)
                else:
                    st = os.stat(f"{fd_dir}/{fd}")
            except (FileNotFoundError, ProcessLookupError):
                continue  # closed meanwhile
            except OSError as exc:
                self.unreadable.append(f"fd {fd} of pid {pid} ({exc.strerror})")
                continue
            if st.st_dev in self.dev_set and (st.st_dev, st.st_ino) in self.wanted:
                self.hold((st.st_dev, st.st_ino), f"fd {fd} of pid {pid} ({self.comm(pid)})")

    def locks(self) -> None:
        try:
            text = (self.procfs / "locks").read_text()
        except OSError as exc:
            self.unreadable.append(f"{self.procfs}/locks ({exc.strerror})")
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


def _read_all(name: str, dirfd: int) -> bytes:
    """The whole of a /proc file, read by name from an open directory."""
    fd = os.open(name, _READ, dir_fd=dirfd)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 17):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def mapped_files(pids: Iterable[int], dev: int, procfs: Path = Path("/proc")) -> set[Identity]:
    """The (dev, ino) of every file on device `dev` that these processes map (/proc/PID/maps);
    a process whose maps cannot be read (exited, not ours to read) adds nothing."""
    needle = f" {_dev_text(dev)} ".encode()
    found: set[Identity] = set()
    for pid in pids:
        try:
            with open(f"{os.fspath(procfs)}/{pid}/maps", "rb") as f:
                text = f.read()
        except OSError:
            continue
        if needle not in text:
            continue
        for raw in text.splitlines():
            fields = raw.split(None, 5)
            if len(fields) >= 5 and fields[3] == needle[1:-1] and fields[4].isdigit():
                found.add((dev, int(fields[4])))
    return found


def scan_holders(
    wanted: Iterable[Identity], procfs: Path = Path("/proc"), exclude: Iterable[int] = ()
) -> tuple[dict[Identity, tuple[str, ...]], list[str], int]:
    """Holders of each wanted identity, what could not be read, and processes read."""
    scan = _Scan(wanted, procfs, frozenset(exclude))
    if not scan.wanted:
        return {}, [], 0
    try:
        pids = sorted((p for p in os.listdir(procfs) if p.isdigit()), key=int)
    except OSError as exc:
        return {}, [f"{procfs} ({exc.strerror})"], 0
    for pid in pids:
        if int(pid) not in scan.exclude:
            scan.process(pid)
    scan.locks()
    return {k: tuple(v) for k, v in scan.found.items()}, scan.unreadable, scan.read


def read_holders(
    wanted: Iterable[Identity],
    procfs: Path = Path("/proc"),
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

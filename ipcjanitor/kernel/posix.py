"""POSIX IPC objects as the kernel shows them: files of /dev/shm and queues of /dev/mqueue.

Nothing under /dev/shm is trusted: it is world-writable, so a name can be a symlink, a
directory swapped for one during the walk, another filesystem mounted below it, or a file
replaced at any moment. It is walked by directory fds, never following a symlink (every open
is O_NOFOLLOW from its parent's fd, and each directory opened is checked to be the one
stat saw), never leaving the root's filesystem. Objects are identified by (st_dev, st_ino).

The mqueue filesystem listed is the one of our own IPC namespace: a mount at /dev/mqueue
made in another IPC namespace shows that namespace's queues, so the mount is checked by
opening one of its queues through mq_open(3) (which always uses ours) and comparing inodes.
Where nothing says whose it is, its queues are not listed and the listing says why.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from ..model import PosixKind, PosixObject

SHM_ROOT = Path("/dev/shm")
MQ_ROOT = Path("/dev/mqueue")
MAX_DEPTH = 32  # deeper directories are not entered (each level holds one fd open)
ASIDE_PREFIX = ".ipcjanitor-"  # engine/remove_posix.py renames files there to remove them
SEM_PREFIX = "sem."  # glibc names /dev/shm/sem.NAME for sem_open("/NAME")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Listing(NamedTuple):
    """The POSIX objects found, and what could not be listed and why."""

    objects: tuple[PosixObject, ...]
    notes: tuple[str, ...]  # e.g. "/dev/mqueue is not mounted: ..."
    ignored: int = 0  # entries that are no POSIX object: symlinks, FIFOs, sockets, devices


@cache
def _libc() -> Any:
    """libc through ctypes, imported only when a queue is looked at (SysV runs never pay)."""
    import ctypes  # noqa: PLC0415

    class MqAttr(ctypes.Structure):
        _fields_ = (  # struct mq_attr (<mqueue.h>): four longs and reserved space
            ("mq_flags", ctypes.c_long),
            ("mq_maxmsg", ctypes.c_long),
            ("mq_msgsize", ctypes.c_long),
            ("mq_curmsgs", ctypes.c_long),
            ("reserved", ctypes.c_long * 4),
        )

    libc = ctypes.CDLL(None, use_errno=True)  # glibc >= 2.34 has mq_* in libc itself
    return ctypes, libc, MqAttr


def mq_messages(fd: int) -> int:
    """Messages queued on an open queue (mq_getattr works on any fd of the mqueue fs)."""
    ctypes, libc, mq_attr = _libc()
    attr = mq_attr()
    if libc.mq_getattr(fd, ctypes.byref(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(attr.mq_curmsgs)


def mq_attr(fd: int) -> tuple[int, int, int]:
    """(mq_maxmsg, mq_msgsize, mq_curmsgs) of an open queue."""
    ctypes, libc, mq_attr_t = _libc()
    attr = mq_attr_t()
    if libc.mq_getattr(fd, ctypes.byref(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(attr.mq_maxmsg), int(attr.mq_msgsize), int(attr.mq_curmsgs)


def mq_open_readonly(name: str) -> int:
    """mq_open("/NAME", O_RDONLY): the queue of that name in OUR IPC namespace, as an fd."""
    ctypes, libc, _ = _libc()
    fd = int(libc.mq_open(os.fsencode("/" + name), os.O_RDONLY | os.O_NONBLOCK))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are octal escapes there."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_type(procfs: Path, mount_point: Path) -> str | None:
    """The filesystem type mounted on top at mount_point (None: nothing mounted there)."""
    found = None
    try:
        text = (procfs / "self" / "mountinfo").read_text(errors="surrogateescape")
    except OSError:
        return None
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and _unescape(fields[4]) == str(mount_point) and right:
            found = right.split()[0]  # the last such mount is on top
    return found


def _record(
    kind: PosixKind,
    name: str,
    st: os.stat_result,
    parents: tuple[tuple[str, int, int], ...],
    entry: str,
    *,
    qnum: int | None = None,
    unreadable: str | None = None,
) -> PosixObject:
    return PosixObject(
        kind=kind,
        name=name,
        dev=st.st_dev,
        ino=st.st_ino,
        uid=st.st_uid,
        gid=st.st_gid,
        mode=st.st_mode,
        size=st.st_size,
        nlink=st.st_nlink,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        atime_ns=st.st_atime_ns,
        parents=parents,
        entry=entry,
        qnum=qnum,
        unreadable=unreadable,
        blocks=st.st_blocks,
    )


class _Walk:
    """One walk of /dev/shm from its root fd."""

    def __init__(self, kinds: frozenset[PosixKind]) -> None:
        self.kinds = kinds
        self.objects: list[PosixObject] = []
        self.notes: list[str] = []
        self.ignored = 0
        self.dev = 0  # the root's filesystem: the walk never leaves it

    def run(self, root: Path) -> None:
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            self.notes.append(
                f"{root} cannot be read ({exc.strerror}): POSIX shared memory and named "
                "semaphores were not listed"
            )
            return
        try:
            st = os.fstat(fd)
            self.dev = st.st_dev
            self._directory(fd, str(root), "", (("", st.st_dev, st.st_ino),))
        finally:
            os.close(fd)

    def _directory(
        self, fd: int, shown: str, prefix: str, parents: tuple[tuple[str, int, int], ...]
    ) -> None:
        try:
            entries = sorted(os.listdir(fd))
        except OSError as exc:
            self.notes.append(f"{shown} cannot be listed ({exc.strerror}): not looked into")
            return
        for entry in entries:
            try:
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing: nothing to judge
            except OSError as exc:
                self.notes.append(f"{shown}/{entry} cannot be read ({exc.strerror})")
                continue
            if stat.S_ISDIR(st.st_mode):
                self._subdirectory(fd, shown, prefix, parents, entry=entry, st=st)
            elif stat.S_ISREG(st.st_mode):
                self._file(prefix, parents, entry, st)
            else:  # symlinks are never followed; FIFOs, sockets and devices are no objects
                self.ignored += 1

    def _subdirectory(
        self,
        fd: int,
        shown: str,
        prefix: str,
        parents: tuple[tuple[str, int, int], ...],
        *,
        entry: str,
        st: os.stat_result,
    ) -> None:
        where = f"{shown}/{entry}"
        if len(parents) == 1 and entry.startswith(ASIDE_PREFIX) and st.st_uid == os.geteuid():
            # where clean renames a file before unlinking it; left only by a killed run
            self.notes.append(f"{where} is ipcjanitor's own removal directory: not entered")
            return
        if st.st_dev != self.dev:
            self.notes.append(f"{where} is another filesystem: not entered")
            return
        if len(parents) > MAX_DEPTH:
            self.notes.append(f"{where} is deeper than {MAX_DEPTH} directories: not entered")
            return
        try:
            sub = os.open(entry, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):  # another user's, closed to us
                self.notes.append(f"{where} cannot be entered ({exc.strerror}): not looked into")
            elif exc.errno != errno.ENOENT:  # ELOOP, ENOTDIR: swapped for something else
                self.notes.append(f"{where} changed during the walk: not entered")
            return
        try:
            sst = os.fstat(sub)
            if (sst.st_dev, sst.st_ino) != (st.st_dev, st.st_ino):
                self.notes.append(f"{where} changed during the walk: not entered")
                return
            self._directory(
                sub, where, f"{prefix}{entry}/", (*parents, (entry, st.st_dev, st.st_ino))
            )
        finally:
            os.close(sub)

    def _file(
        self, prefix: str, parents: tuple[tuple[str, int, int], ...], entry: str, st: os.stat_result
    ) -> None:
        if not prefix and entry.startswith(SEM_PREFIX) and len(entry) > len(SEM_PREFIX):
            kind, name = PosixKind.SEM, entry[len(SEM_PREFIX) :]
        else:
            kind, name = PosixKind.SHM, prefix + entry
        if kind in self.kinds:
            self.objects.append(_record(kind, name, st, parents, entry))


def _queues(root: Path, procfs: Path, notes: list[str]) -> list[PosixObject]:
    """The queues of our IPC namespace's mqueue filesystem, if root is that filesystem."""
    fstype = mount_type(procfs, root)
    if fstype != "mqueue":
        notes.append(
            f"{root} is not mounted (no mqueue filesystem there): POSIX message queues were "
            f"not listed (mount -t mqueue mqueue {root})"
            if fstype is None
            else f"{root} is a {fstype} filesystem, not mqueue: POSIX message queues were "
            "not listed"
        )
        return []
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        notes.append(f"{root} cannot be read ({exc.strerror}): POSIX message queues not listed")
        return []
    try:
        root_st = os.fstat(fd)
        parents = (("", root_st.st_dev, root_st.st_ino),)
        found: list[tuple[str, os.stat_result]] = []
        for entry in sorted(os.listdir(fd)):
            try:
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            if stat.S_ISREG(st.st_mode) and st.st_dev == root_st.st_dev:
                found.append((entry, st))
        if found and not _ours(found, root, notes):
            return []
        return [_queue(fd, entry, st, parents) for entry, st in found]
    finally:
        os.close(fd)


def _ours(found: list[tuple[str, os.stat_result]], root: Path, notes: list[str]) -> bool:
    """Whether the mount shows our IPC namespace's queues: mq_open(3) opens ours by name."""
    problem = ""
    for entry, st in found:
        try:
            qfd = mq_open_readonly(entry)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                problem = f"queue {entry!r} there does not exist in our IPC namespace"
                break
            problem = f"mq_open of {entry!r} failed ({exc.strerror})"
            continue  # removed meanwhile, or no permission: try the next one
        except AttributeError:  # a libc without mq_open
            problem = "this libc has no mq_open to tell"
            break
        try:
            qst = os.fstat(qfd)
        finally:
            os.close(qfd)
        if (qst.st_dev, qst.st_ino) == (st.st_dev, st.st_ino):
            return True
        problem = f"queue {entry!r} there is another inode than ours of that name"
        break
    notes.append(
        f"{root} may be the mqueue filesystem of another IPC namespace ({problem}): POSIX "
        "message queues were not listed"
    )
    return False


def _queue(
    fd: int, entry: str, st: os.stat_result, parents: tuple[tuple[str, int, int], ...]
) -> PosixObject:
    """One queue, with its message count read through an fd checked to be that inode."""
    qnum, why = None, None
    try:
        qfd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError as exc:
        why = f"its messages cannot be counted ({exc.strerror})"
    else:
        try:
            qst = os.fstat(qfd)
            if (qst.st_dev, qst.st_ino) != (st.st_dev, st.st_ino):
                why = "it was replaced while being read"
            else:
                qnum = mq_messages(qfd)
        except (OSError, AttributeError) as exc:
            why = f"its messages cannot be counted (mq_getattr: {exc})"
        finally:
            os.close(qfd)
    return _record(PosixKind.MQ, entry, st, parents, entry, qnum=qnum, unreadable=why)


def list_posix(
    kinds: Iterable[PosixKind] = frozenset(PosixKind),
    procfs: Path = Path("/proc"),
    shm_root: Path = SHM_ROOT,
    mq_root: Path = MQ_ROOT,
) -> Listing:
    """Every POSIX object of the kinds asked, and notes on what could not be listed."""
    wanted = frozenset(kinds)
    walk = _Walk(wanted)
    if wanted & {PosixKind.SHM, PosixKind.SEM}:
        walk.run(shm_root)
    objects = walk.objects
    if PosixKind.MQ in wanted:
        objects += _queues(mq_root, procfs, walk.notes)
    return Listing(tuple(objects), tuple(walk.notes), walk.ignored)

"""The only module that removes POSIX objects, and never an inode other than the one judged.

For each batch of stale objects:
1. walk from the root again by directory fds (O_NOFOLLOW), each directory checked to be the
   one the scan walked (dev, inode), and open the object itself O_NOFOLLOW from its
   directory: dev, inode, ctime, mtime, size and links must be the scan's;
2. take flock(LOCK_EX|LOCK_NB) on it: a cooperative owner's LOCK_SH makes it `changed`;
3. take a write lease on it (F_SETLEASE F_WRLCK): the kernel grants it only while no other
   open file description of that inode exists anywhere — an fd, a mapping (which holds its
   file), a lock (which needs one), in any pid namespace, in flight in a unix socket, held
   by the kernel (a loop device) — and from then on makes every open(2) of it wait for us
   and flags it on our lease. That is the proof "nobody holds it now" for that object; for
   an object the kernel gives no lease (a queue, another user's file without CAP_LEASE,
   leases disabled), with every lock of the batch held, read the holders again (maps,
   fds, /proc/locks; our own excluded): anyone who mapped, opened or locked it since the
   scan keeps it;
4. /dev/shm: rename the name into a directory of our own (mode 0700, in /dev/shm's root),
   compare what arrived there with the open object, and unlink it there: the check and the
   removal are one step nobody else can come between. A file swapped in at that moment is
   put back (link, which never replaces) and the object is `changed`; so is the object
   itself when, leased, someone began to open it (the lease flagged, or refused again once
   it is in our directory).
   /dev/mqueue has no rename: re-stat the name from the directory fd (AT_SYMLINK_NOFOLLOW),
   compare, unlinkat. The window left there is between that stat and the unlinkat (README:
   "how it decides"); in its sticky root only the name's owner can swap it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import signal
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from ..kernel.holders import Holders, Identity, read_holders
from ..kernel.posix import ASIDE_PREFIX, MQ_ROOT, SHM_ROOT
from ..kernel.procfs import LIVE, Procfs
from ..model import PosixDecision, PosixKind, PosixObject, Verdict

MQ = PosixKind.MQ

MAX_BATCH = 8192  # objects held open and locked at once, fds allowing (see _batch_size)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OBJ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
Reread = Callable[[Iterable[Identity]], Holders]
_OPENED_MEANWHILE = "since the scan, another process opened it (the kernel refused a write lease)"


class _Kept(Exception):
    """The object is not removed: the verdict and why."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


def _errno(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def _batch_size() -> int:
    """Objects per batch: each holds one fd open while the batch's holders are read again
    (once per batch: bigger batches, fewer passes over every process). The soft fd limit
    is raised to the hard one where it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, MAX_BATCH + 256) if hard != resource.RLIM_INFINITY else MAX_BATCH + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    room = MAX_BATCH if soft == resource.RLIM_INFINITY else soft - 256  # directories, stdio
    return max(16, min(MAX_BATCH, room))


class _Dirs:
    """The batch's directories, each opened once, walked from the root and checked."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.opened: dict[tuple[Path, tuple[tuple[str, int, int], ...]], int] = {}

    def open(self, obj: PosixObject, root: Path) -> int:
        key = (root, obj.parents)
        if key not in self.opened:
            self.opened[key] = _open_dir(self.stack, obj, root)
        return self.opened[key]


def _open_dir(stack: ExitStack, obj: PosixObject, root: Path) -> int:
    """The object's directory, walked from root, each step checked against the scan."""
    fd = -1
    for i, (name, dev, ino) in enumerate(obj.parents):
        try:
            if i == 0:
                nxt = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            else:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise _Kept(
                Verdict.CHANGED, f"its directory changed since the scan ({_errno(exc)})"
            ) from None
        stack.callback(os.close, nxt)
        st = os.fstat(nxt)
        if (st.st_dev, st.st_ino) != (dev, ino):
            raise _Kept(Verdict.CHANGED, "its directory was replaced since the scan")
        fd = nxt
    return fd


def _open_object(stack: ExitStack, obj: PosixObject, dirfd: int, lease: bool) -> tuple[int, bool]:
    """The object opened from its directory, checked to be the inode judged, and locked;
    with lease, also leased where the kernel gives one (then True)."""
    try:
        fd = os.open(obj.entry, _OBJ_FLAGS, dir_fd=dirfd)
    except FileNotFoundError:
        raise _Kept(Verdict.CHANGED, "vanished before removal (someone else removed it)") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENOTDIR):
            raise _Kept(Verdict.CHANGED, "its name is no longer the file judged") from None
        raise _Kept(Verdict.FAILED, f"open refused: {_errno(exc)}") from None
    stack.callback(os.close, fd)
    st = os.fstat(fd)
    now = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size, st.st_nlink)
    if now != obj.facts():
        if (st.st_dev, st.st_ino) != obj.identity:
            why = "its name now belongs to another file (replaced since the scan)"
        else:
            why = "it was modified since the scan (ctime, mtime, size or links differ)"
        raise _Kept(Verdict.CHANGED, why)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _Kept(
            Verdict.CHANGED, "a process holds a lock on it (a cooperative owner is alive)"
        ) from None
    except OSError as exc:
        raise _Kept(Verdict.FAILED, f"flock refused: {_errno(exc)}") from None
    return fd, lease and _take_lease(fd)


def _take_lease(fd: int) -> bool:
    """A write lease on the open object: True granted; False the kernel gives none here
    (the holders are then read again); another open file description makes it `changed`."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except BlockingIOError:  # EAGAIN: opened elsewhere (or executed) right now
        raise _Kept(Verdict.CHANGED, _OPENED_MEANWHILE) from None
    except OSError:  # EACCES (not ours, no CAP_LEASE), EINVAL (leases-enable = 0, no support)
        return False
    return True


def _still_leased(fd: int) -> bool:
    """Nobody began to open it since the lease (the kernel flags that on the lease), and no
    other open file description of it exists now (taking the lease again checks that)."""
    try:
        if fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK:
            return False
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:
        return False
    return True


def _unlink(obj: PosixObject, dirfd: int, fd: int) -> None:
    """unlinkat, right after checking that the name is still the open, locked inode."""
    try:
        st = os.stat(obj.entry, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        raise _Kept(Verdict.CHANGED, "vanished before removal (someone else removed it)") from None
    held = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino):
        raise _Kept(Verdict.CHANGED, "its name now belongs to another file (replaced just now)")
    try:
        os.unlink(obj.entry, dir_fd=dirfd)
    except FileNotFoundError:
        raise _Kept(Verdict.CHANGED, "vanished before removal (someone else removed it)") from None
    except OSError as exc:
        raise _Kept(Verdict.FAILED, f"unlink refused: {_errno(exc)}") from None


class _Aside:
    """A directory of ours (mode 0700) in /dev/shm's root: a file judged stale is renamed
    into it, checked there — where nobody else can swap it — and only then unlinked."""

    def __init__(self, stack: ExitStack, root: Path) -> None:
        self.stack, self.root = stack, root
        self.fd: int | None = None
        self.rootfd = -1
        self.name = ""
        self.used = 0

    def slot(self) -> tuple[int, str]:
        """The directory's fd and a fresh name in it."""
        if self.fd is None:
            self.rootfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.stack.callback(os.close, self.rootfd)
            self.fd = self._make()
        self.used += 1
        return self.fd, str(self.used)

    def _make(self) -> int:
        for _ in range(8):
            name = ASIDE_PREFIX + os.urandom(8).hex()
            try:
                os.mkdir(name, 0o700, dir_fd=self.rootfd)
            except FileExistsError:
                continue
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.rootfd)
            self.name = name
            self.stack.callback(self._close, fd)
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise _Kept(Verdict.FAILED, f"{self.root}/{name} is not ours alone")
            return fd
        raise _Kept(Verdict.FAILED, f"cannot make a directory of our own in {self.root}")

    def _close(self, fd: int) -> None:
        os.close(fd)
        with contextlib.suppress(OSError):  # not empty: a file could not be put back (said)
            os.rmdir(self.name, dir_fd=self.rootfd)


def _remove_aside(obj: PosixObject, dirfd: int, fd: int, aside: _Aside, leased: bool) -> None:
    """Rename the name into our own directory, check there that it is the open, locked
    inode (and, leased, that nobody began to open it), and unlink it; a file swapped in at
    that moment is put back untouched, and so is the object if someone is opening it."""
    try:
        privfd, slot = aside.slot()
    except OSError as exc:
        raise _Kept(Verdict.FAILED, f"cannot make a directory of our own: {_errno(exc)}") from None
    try:
        os.rename(obj.entry, slot, src_dir_fd=dirfd, dst_dir_fd=privfd)
    except FileNotFoundError:
        raise _Kept(Verdict.CHANGED, "vanished before removal (someone else removed it)") from None
    except OSError as exc:
        why = f"rename refused: {_errno(exc)}{_whose(dirfd, obj, exc)}"
        raise _Kept(Verdict.FAILED, why) from None
    moved = os.stat(slot, dir_fd=privfd, follow_symlinks=False)
    ours = (moved.st_dev, moved.st_ino) == obj.identity  # the open fd's: checked at open
    if ours and (not leased or _still_leased(fd)):
        os.unlink(slot, dir_fd=privfd)  # ours alone: nobody else can have touched it
        return
    _put_back(obj, dirfd, aside, slot, moved)
    if ours:
        raise _Kept(Verdict.CHANGED, _OPENING + ": put back, untouched")
    raise _Kept(
        Verdict.CHANGED,
        "its name was swapped for another file at the moment of removal: that file was put "
        "back, untouched",
    )


def _whose(dirfd: int, obj: PosixObject, exc: OSError) -> str:
    """Why a rename out of the object's directory was refused, when the directory is not
    ours to write in (another user's): what it would take."""
    if exc.errno not in (errno.EACCES, errno.EPERM):
        return ""
    try:
        st = os.fstat(dirfd)
    except OSError:
        return ""
    if st.st_uid == os.geteuid():
        return ""
    mode = stat.S_IMODE(st.st_mode)
    need = (
        "CAP_FOWNER (another user's file in a sticky directory)"
        if mode & stat.S_ISVTX and mode & 0o002
        else "write access there (CAP_DAC_OVERRIDE)"
    )
    where = "/".join(name for name, _, _ in obj.parents[1:])
    return (
        f": its directory {SHM_ROOT}/{where} is uid {st.st_uid}'s, mode {mode:04o}, and "
        f"removing a file from it takes {need}, which this run lacks (the shipped unit "
        "does not grant it); nothing was touched"
    )


_OPENING = "another process began to open it at the moment of removal"


def _put_back(
    obj: PosixObject, dirfd: int, aside: _Aside, slot: str, moved: os.stat_result
) -> None:
    """What arrived in our directory goes back under its name, never replacing another."""
    privfd = aside.fd
    assert privfd is not None
    where = f"{aside.root}/{aside.name}/{slot}"
    try:
        if stat.S_ISDIR(moved.st_mode):
            os.rename(slot, obj.entry, src_dir_fd=privfd, dst_dir_fd=dirfd)
        else:  # link never replaces: a name taken again meanwhile is not overwritten
            os.link(slot, obj.entry, src_dir_fd=privfd, dst_dir_fd=dirfd, follow_symlinks=False)
            os.unlink(slot, dir_fd=privfd)
    except OSError as exc:
        raise _Kept(
            Verdict.FAILED,
            f"it or a file swapped in for it at the moment of removal could not be put back "
            f"({_errno(exc)}): it is in {where}, untouched",
        ) from None


def _root(obj: PosixObject, shm_root: Path, mq_root: Path) -> Path:
    return mq_root if obj.kind is PosixKind.MQ else shm_root


def _batch(
    batch: Sequence[PosixDecision], reread: Reread, roots: tuple[Path, Path], lease: bool
) -> dict[int, PosixDecision]:
    """Outcomes by position in the batch."""
    shm_root, mq_root = roots
    out: dict[int, PosixDecision] = {}
    with ExitStack() as stack:
        aside = _Aside(stack, shm_root)
        dirs = _Dirs(stack)
        opened: dict[int, tuple[int, int, bool]] = {}
        for i, d in enumerate(batch):
            try:
                dirfd = dirs.open(d.obj, _root(d.obj, shm_root, mq_root))
                fd, leased = _open_object(stack, d.obj, dirfd, lease and d.obj.kind is not MQ)
                opened[i] = (dirfd, fd, leased)
            except _Kept as kept:
                out[i] = d._replace(verdict=kept.verdict, reason=kept.reason)
        # the contract's re-read, for every object: a lease adds the kernel's word (no other
        # open file, in any pid namespace, in flight or not), it does not replace the re-read
        fresh = reread([batch[i].obj.identity for i in opened]) if opened else Holders({}, None)
        for i, (dirfd, fd, leased) in opened.items():
            out[i] = _remove_one(batch[i], (dirfd, fd, leased), fresh, aside)
    return out


def _remove_one(
    d: PosixDecision, held: tuple[int, int, bool], fresh: Holders, aside: _Aside
) -> PosixDecision:
    """One opened, locked (and maybe leased) object: removed, or why not."""
    dirfd, fd, leased = held
    holders = fresh.by_identity.get(d.obj.identity, ())
    if holders or fresh.blind:
        why = "; ".join(holders) or f"cannot re-check its holders: {fresh.blind}"
        return d._replace(verdict=Verdict.CHANGED, reason=f"since the scan, {why}",
                          holders=holders)  # fmt: skip
    try:
        if d.obj.kind is MQ:  # the mqueue fs has no rename: stat, unlink
            _unlink(d.obj, dirfd, fd)
        else:
            _remove_aside(d.obj, dirfd, fd, aside, leased)
    except _Kept as kept:
        if leased:  # an open(2) waiting for us goes on now, to the name put back
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return d._replace(verdict=kept.verdict, reason=kept.reason)
    return d._replace(verdict=Verdict.REMOVED)


@contextlib.contextmanager
def _sigio_ignored() -> Iterator[bool]:
    """A broken lease signals its holder (SIGIO, fatal by default): ignored while we hold
    leases. False where the handler cannot be set (not the main thread): no leases then."""
    try:
        before = signal.signal(signal.SIGIO, signal.SIG_IGN)
    except ValueError:
        yield False
        return
    try:
        yield True
    finally:
        signal.signal(signal.SIGIO, before)


def remove_posix(
    decisions: Iterable[PosixDecision],
    reread: Reread | None = None,
    *,
    shm_root: Path = SHM_ROOT,
    mq_root: Path = MQ_ROOT,
    procfs: Path | Procfs = LIVE,
    pid_namespace_complete: bool = False,
    leases: bool = True,
) -> Iterator[PosixDecision]:
    """Every decision back, in order, stale ones replaced by what removing them did.

    leases=False: every object's holders are read again with the batch's locks held, even
    where the kernel would give a lease (the tests of that re-read use it)."""
    if reread is None:

        def reread(identities: Iterable[Identity]) -> Holders:
            return read_holders(identities, procfs, pid_namespace_complete=pid_namespace_complete)

    every = list(decisions)
    stale = [i for i, d in enumerate(every) if d.verdict is Verdict.STALE]
    size = _batch_size()
    with _sigio_ignored() as can_lease:
        for start in range(0, len(stale), size):  # batches of stale ones only: fewer re-reads
            part = stale[start : start + size]
            done = _batch(
                [every[i] for i in part], reread, (shm_root, mq_root), leases and can_lease
            )
            for n, i in enumerate(part):
                every[i] = done[n]
    yield from every

"""One run at a time per IPC namespace: an flock, and a word about whoever held it."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import IpcJanitorError, NotPermittedError
from ..state import open_dir, state_dir

WAIT_LIMIT = 120.0
# The hook's: systemd gives ExecStopPost= TimeoutStopSec= (default 90 s) and fails the stop
# after it. A fixed budget, not one read from the environment (the service's to set); a run
# that holds the lock longer is another root run, and the next run judges what it leaves.
HOOK_WAIT_LIMIT = 5.0


class Held(NamedTuple):
    fd: int
    waited: float  # seconds spent waiting for another run
    other_pid: int | None  # the run we waited for

    def release(self) -> None:
        os.close(self.fd)

    def note(self) -> str | None:
        if self.other_pid is None:
            return None
        return (
            f"waited {self.waited:.1f}s for another ipcjanitor run (pid {self.other_pid}) to "
            "finish; this run then judged what that one left"
        )


def lock_path() -> Path:
    """The lock of this IPC namespace's runs. Its name is new with issue 16.6: a lock file of
    the old name may be held by another user since its 0644 days; nothing uses it now."""
    base = state_dir()
    try:  # live whatever procfs a run reads: the lock is the running IPC namespace's own
        ns = os.readlink("/proc/self/ns/ipc").strip("ipc:[]")
    except OSError:
        ns = "unknown"
    return base / f"run-ipc-{ns}.lock"


class LockBusy(IpcJanitorError):
    """Another run held the lock past the wait limit; this run removed nothing."""


def acquire(path: Path | None = None, limit: float = WAIT_LIMIT) -> Held:
    """Hold the run lock, waiting at most `limit` seconds for another run (else LockBusy).

    flock needs no write access, so whoever can open the file can hold it: as root the lock
    is a 0600 file of root's in a directory of root's alone (0700), both opened without
    following a symlink and checked by descriptor. A root-owned directory with a wider mode
    (an older ipcjanitor, `RuntimeDirectory=` without a mode) is repaired; one owned by
    anyone else is refused.
    """
    path = path or lock_path()
    fd = _open(path, root=os.geteuid() == 0)
    start = time.monotonic()
    other: int | None = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if other is None:
                try:
                    other = int(os.pread(fd, 32, 0).split()[0])
                except (ValueError, IndexError, OSError):
                    other = 0
            if time.monotonic() - start > limit:
                os.close(fd)
                raise LockBusy(
                    f"another ipcjanitor run (pid {other}) has held {path} for over "
                    f"{limit:.0f}s; nothing was removed by this run"
                ) from None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Held(fd, time.monotonic() - start, other)


def _open(path: Path, root: bool) -> int:
    """The lock file's descriptor, opened from its directory's; NotPermittedError if either
    is not what only this user (as root: only root) could have made."""
    dir_fd = open_dir(path.parent, root, "the run lock's directory")
    try:
        try:
            fd = os.open(
                path.name,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except OSError as exc:
            raise NotPermittedError(f"cannot open the run lock {path}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    wrong = None
    if not stat.S_ISREG(st.st_mode):
        wrong = "is not a regular file"
    elif st.st_uid != os.geteuid():
        wrong = f"belongs to uid {st.st_uid}"
    elif st.st_nlink != 1:
        wrong = f"has {st.st_nlink} links"
    elif st.st_mode & 0o077:  # never made so by ipcjanitor: someone may hold it open
        wrong = f"has mode {stat.S_IMODE(st.st_mode):04o}"
    if wrong:
        os.close(fd)
        raise NotPermittedError(
            f"the run lock {path} {wrong}: not a lock this user alone can take; "
            "remove it and run again"
        )
    return fd

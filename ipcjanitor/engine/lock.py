"""One run at a time per IPC namespace: an flock, and a word about whoever held it."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import IpcJanitorError, NotPermittedError

WAIT_LIMIT = 120.0


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


def state_dir() -> Path:
    """Where runs leave what later runs of this boot need: the run lock, the clock record.

    Root's is fixed: a hook runs as root with the hooked service's Environment=, which must
    not choose where root writes (nor which lock keeps it apart from the timer's runs).
    """
    if os.geteuid() == 0:
        return Path("/run/ipcjanitor")
    if env := os.environ.get("IPCJANITOR_LOCK_DIR"):
        return Path(env)
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime)
    return Path(f"/tmp/ipcjanitor-{os.geteuid()}")  # per user: nobody else may plant files


def lock_path() -> Path:
    base = state_dir()
    try:
        ns = os.readlink("/proc/self/ns/ipc").strip("ipc:[]")
    except OSError:
        ns = "unknown"
    return base / f"ipcjanitor-ipc-{ns}.lock"


def acquire(path: Path | None = None, limit: float = WAIT_LIMIT) -> Held:
    path = path or lock_path()
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if path.parent.stat().st_uid not in (0, os.geteuid()):
            raise NotPermittedError(f"{path.parent} belongs to another user: not using its lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise NotPermittedError(f"cannot open the run lock {path}: {exc.strerror}") from None
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
                raise IpcJanitorError(
                    f"another ipcjanitor run (pid {other}) has held {path} for over "
                    f"{limit:.0f}s; nothing was removed by this run"
                ) from None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Held(fd, time.monotonic() - start, other)

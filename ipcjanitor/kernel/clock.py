"""The clocks, and the record of their steps in root's state directory: reading and writing.

What the readings prove is clock.py's (PURE). This module only reads the clocks, the boot
id and our time namespace, and reads or replaces the record, always by descriptor: the
directory opened without following a symlink and checked to be root's alone
(state.open_dir), the file opened O_NOFOLLOW|O_NONBLOCK and checked by fstat, a new one
created under a fresh name with O_EXCL, given mode 0644 by fchmod and renamed over the old
within that directory. The recorder (`ipcjanitor record-clock`, started by
ipcjanitor-clock.timer) is the only writer; flock on the directory keeps two of it apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from pathlib import Path

from ..clock import JITTER, RECORD_NAME, Reading, Record, add, parse, render
from ..errors import IpcJanitorError
from ..state import ROOT_STATE_DIR, open_dir

MAX_BYTES = 64 * 1024  # a record of KEEP + 1 readings is about 4 KiB
ROUNDS = 8  # readings at most per run while the clock keeps moving under the recorder


def reading() -> Reading:
    """The clocks now. The wall clock is read between the two others: the offset is off by
    at most the time of three reads (microseconds), far inside clock.JITTER."""
    mono = time.clock_gettime(time.CLOCK_MONOTONIC)
    wall = time.time()
    boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    return Reading(mono, boot, wall - boot)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def time_namespace() -> str:
    """Our time namespace: a record made in another one counts other clocks."""
    try:
        return os.readlink("/proc/self/ns/time")
    except OSError:
        return "none"  # a kernel without time namespaces: every process shares the clocks


def read_record(directory: Path = ROOT_STATE_DIR) -> Record | str:
    """The record, or why there is none to trust: missing, unreadable (a user cannot read
    root's), not a regular file of root's (of ours, as a user) with one link, or damaged."""
    path = directory / RECORD_NAME
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    try:
        return _read_at(dir_fd, path)
    finally:
        os.close(dir_fd)


def _read_at(dir_fd: int, path: Path) -> Record | str:
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)  # fmt: skip
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return f"{path} is not a regular file with one link"
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            return f"{path} is not root's alone (uid {st.st_uid}, mode {st.st_mode & 0o777:04o})"
        text = os.read(fd, MAX_BYTES + 1)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    finally:
        os.close(fd)
    record = parse(text.decode("utf-8", "replace")) if len(text) <= MAX_BYTES else None
    return record if record is not None else f"{path} is damaged"


def record(directory: Path = ROOT_STATE_DIR, root: bool = True) -> int:
    """Add a reading of the clocks to the record; again while the offset moved under us (a
    step while this ran, which the timer, waiting for this run to end, would not fire on).
    Returns the number of readings added. A reading that cannot be written removes the
    record: one lost would leave it looking complete while missing a step."""
    dir_fd = open_dir(directory, root, "the clock record's directory")
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)  # one recorder at a time; released with dir_fd
        ids = (boot_id(), time_namespace())
        done = 0
        now = reading()
        while True:
            old = _read_at(dir_fd, directory / RECORD_NAME)
            _write(dir_fd, directory, add(None if isinstance(old, str) else old, *ids, now))
            done += 1
            again = reading()
            if abs(again.offset - now.offset) <= JITTER or done == ROUNDS:
                return done
            now = again
    finally:
        os.close(dir_fd)


def _write(dir_fd: int, directory: Path, rec: Record) -> None:
    tmp = f".{RECORD_NAME}.{os.urandom(8).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)  # fmt: skip
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            os.write(fd, render(rec).encode())
        finally:
            os.close(fd)
        _install(dir_fd, tmp)
    except OSError as exc:
        for name in (tmp, RECORD_NAME):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
        raise IpcJanitorError(
            f"cannot record the clock in {directory / RECORD_NAME}: {exc.strerror}; the record "
            "is removed, so no run takes a gap in it for PID reuse until a reading succeeds"
        ) from None


def _install(dir_fd: int, tmp: str) -> None:
    os.rename(tmp, RECORD_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

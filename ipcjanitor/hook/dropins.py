"""The list of drop-ins install-hook wrote: what the package's purge deletes, and only that.

/var/lib/ipcjanitor/dropins holds one line per drop-in, `SHA256  PATH` as sha256sum(1) prints
it: the digest of the text install-hook wrote. On `apt purge` (and an rpm erase) the
maintainer script (packaging/dropins.sh) deletes each listed drop-in whose digest still
matches, so a drop-in an administrator changed since, or one install-hook never wrote, stays.

Written as root's other files are: /var/lib walked with chase.open_directory (root's and
writable by root alone, through root's symlinks), ipcjanitor/ made 0700 and opened without
following a symlink, the list read through an fd checked by fstat, rewritten under a fresh
name (O_EXCL, mode 0644 by fchmod) and renamed over the old one, all under an flock of the
directory so that two install-hooks lose no line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
from pathlib import Path

from ..chase import READ, Refused, file_kind, open_directory
from ..errors import NotPermittedError

LIST_DIR = Path("/var/lib/ipcjanitor")
LIST_NAME = "dropins"
MAX_BYTES = 1 << 20
# What a line may name (the maintainer script checks the same): install-hook's drop-in of a
# service, under /etc or /run. Unit names are [A-Za-z0-9:_.\\@-] (systemd.unit(5)).
DROPIN_PATH = re.compile(
    r"/(etc|run)/systemd/system/[A-Za-z0-9:_.\\@-]+\.service\.d/ipcjanitor\.conf"
)
_LINE = re.compile(r"([0-9a-f]{64})  (\S+)")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def note(path: Path, text: str | None) -> None:
    """Record that install-hook wrote `text` at path (None: that it removed it)."""
    where = str(path)
    if not DROPIN_PATH.fullmatch(where):
        raise NotPermittedError(f"{where} is not a drop-in path install-hook writes")
    dir_fd = _open_dir()
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        entries = {p: d for p, d in _read(dir_fd).items() if p != where}
        if text is not None:
            entries[where] = digest(text)
        body = "".join(f"{d}  {p}\n" for p, d in sorted(entries.items()))
        _replace(dir_fd, body.encode())
    finally:
        os.close(dir_fd)  # releases the flock


def listed(directory: Path | None = None) -> dict[str, str]:
    """path -> digest of every drop-in on the list (empty when there is none)."""
    where = directory or LIST_DIR
    try:
        dir_fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    try:
        return _read(dir_fd)
    finally:
        os.close(dir_fd)


def _shown() -> str:
    return str(LIST_DIR / LIST_NAME)


def _open_dir() -> int:
    """LIST_DIR's descriptor (O_RDONLY, to flock and write in), made 0700 where missing."""
    strict = os.geteuid() == 0
    try:
        parent_fd, real = open_directory(str(LIST_DIR.parent), strict, shown=str(LIST_DIR))
    except Refused as exc:
        raise NotPermittedError(f"{_shown()}: {exc.problem}") from None
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(LIST_DIR.name, 0o700, dir_fd=parent_fd)
        fd = os.open(
            LIST_DIR.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=parent_fd,
        )  # fmt: skip
    except OSError as exc:
        raise NotPermittedError(f"cannot open {real}/{LIST_DIR.name}: {exc.strerror}") from None
    finally:
        os.close(parent_fd)
    st = os.fstat(fd)
    if strict and st.st_uid != 0:
        os.close(fd)
        raise NotPermittedError(
            f"{LIST_DIR} belongs to uid {st.st_uid}, not root: install-hook keeps its list "
            f"only where root alone can change it; remove it (rm -r {LIST_DIR}) and run again"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o700)
    return fd


def _read(dir_fd: int) -> dict[str, str]:
    try:
        fd = os.open(LIST_NAME, READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotPermittedError(f"{_shown()} is a symlink; remove it and run again") from None
        raise NotPermittedError(f"cannot read {_shown()}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotPermittedError(f"{_shown()} is {file_kind(st)}; remove it and run again")
        data = f.read(MAX_BYTES + 1)
    entries = {}
    for line in data.decode("utf-8", "replace").splitlines():
        m = _LINE.fullmatch(line)
        if m and DROPIN_PATH.fullmatch(m[2]):
            entries[m[2]] = m[1]
    return entries


def _replace(dir_fd: int, data: bytes) -> None:
    tmp = f".{LIST_NAME}.{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, LIST_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise

"""Where ipcjanitor keeps what later runs of this boot need: one directory, chosen here only.

On the ground floor: the run lock (engine/lock.py) and the record of the clock's steps
(kernel/clock.py) both live in it, and both open it here, by descriptor.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import NotPermittedError

ROOT_STATE_DIR = Path("/run/ipcjanitor")


def state_dir() -> Path:
    """Where runs leave what later runs of this boot need: the run lock, the clock record.

    Root's is fixed: a hook runs as root with the hooked service's Environment=, which must
    not choose where root writes (nor which lock keeps it apart from the timer's runs).
    """
    if os.geteuid() == 0:
        return ROOT_STATE_DIR
    if env := os.environ.get("IPCJANITOR_LOCK_DIR"):
        return Path(env)
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime)
    return Path(f"/tmp/ipcjanitor-{os.geteuid()}")  # per user: nobody else may plant files


def open_dir(where: Path, root: bool, what: str) -> int:
    """The state directory's descriptor, made (0700) if missing and opened without following
    a symlink; NotPermittedError if it is not what only this user (as root: only root) could
    have made. A root-owned directory with a wider mode (an older ipcjanitor,
    `RuntimeDirectory=` without a mode) is set back to 0700. `what` names it in errors."""
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise NotPermittedError(f"cannot open {what} {where}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid not in ((0,) if root else (0, os.geteuid())):
            raise NotPermittedError(
                f"{where} belongs to uid {st.st_uid}, not {'root' if root else 'this user'}: "
                f"not using {what} another user controls; remove it (rm -r {where}) and run "
                "again"
            )
        if root and stat.S_IMODE(st.st_mode) & 0o077:  # root's, opened wider: root's alone
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd

"""Where ipcjanitor keeps what later runs of this boot need: one directory, chosen here only.

On the ground floor: the run lock (engine/lock.py) and the clock record (kernel/processes.py)
both live in it.
"""

from __future__ import annotations

import os
from pathlib import Path


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

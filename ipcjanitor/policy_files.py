"""Where policy files are, in reading order. Imports only os: the hook's fast path uses it."""

from __future__ import annotations

import os
from collections.abc import Sequence

SEARCH_PATH = (
    "/usr/lib/ipcjanitor/policy.d",
    "/etc/ipcjanitor/policy.toml",
    "/etc/ipcjanitor/policy.d",
)


def _tomls(directory: str) -> list[str]:
    """The *.toml files of a directory, in file-name order (not recursive)."""
    try:
        names = sorted(e.name for e in os.scandir(directory) if e.name.endswith(".toml"))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]


def search(explicit: str | None, search_path: Sequence[str] | None = None) -> list[str] | None:
    """The files to read: --policy/IPCJANITOR_POLICY (file or directory), else the search path.

    None when an explicit path does not exist.
    """
    if explicit:
        if os.path.isdir(explicit):
            return _tomls(explicit)
        return [explicit] if os.path.exists(explicit) else None
    files: list[str] = []
    for entry in SEARCH_PATH if search_path is None else search_path:
        if entry.endswith(".toml"):
            if os.path.isfile(entry):
                files.append(entry)
        else:
            files.extend(_tomls(entry))
    return files

"""Where policy files are, in reading order, and their bytes, read the safe way (chase.py).

Imports only os, stat and errno (through chase): the hook's fast path uses it.
"""

from __future__ import annotations

from ..chase import Refused, read_policy

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence  # at run time it would import collections: 1 ms

SEARCH_PATH = (
    "/usr/lib/ipcjanitor/policy.d",
    "/etc/ipcjanitor/policy.toml",
    "/etc/ipcjanitor/policy.d",
)
MAX_POLICY_BYTES = 4 * 1024 * 1024


def read(
    explicit: str | None, strict: bool, search_path: Sequence[str] | None = None
) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The policy files' bytes in reading order, and every (path, problem) met on the way.

    explicit (--policy, a file or a directory of *.toml) replaces the search path, where a
    missing entry is skipped; an entry ending in .toml is a file, any other a directory.
    """
    if explicit:
        entries: list[tuple[str, bool | None]] = [(explicit, None)]
    else:
        search = SEARCH_PATH if search_path is None else search_path
        entries = [(e, not e.endswith(".toml")) for e in search]
    files: list[tuple[str, bytes]] = []
    problems: list[tuple[str, str]] = []
    for entry, want_dir in entries:
        try:
            found = read_policy(entry, strict, MAX_POLICY_BYTES, ".toml", want_dir)
        except Refused as exc:
            if exc.missing and explicit:
                problems.append((entry, "no such policy file or directory"))
            elif not exc.missing:
                problems.append((exc.path, exc.problem))
            continue
        for path, data in found:
            if isinstance(data, Refused):
                problems.append((data.path, data.problem))
            else:
                files.append((path, data))
    return files, problems

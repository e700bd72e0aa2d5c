"""Unit files on disk: which names are aliases of which unit (Alias=, unit-file symlinks).

systemd runs a unit under one name, its primary name: the cgroup carries that name only.
Every other name of it is a symlink in the unit search path (`systemctl enable` writes one
per Alias=; packages ship others: autovt@.service -> getty@.service, Debian's mysql.service
-> mariadb.service). A policy, an install-hook or a hook naming the alias must judge the unit
systemd runs, or a running service looks stopped. This module reads those symlinks (no file
is opened; readlink only) in systemd's order for the system manager; unitnames.primary_name
resolves a name against what it read.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Collection

# systemd's unit search path for the system manager (`systemd-analyze unit-paths`), in order:
# the first directory holding a name decides what that name is. Fixed here: the environment
# ($SYSTEMD_UNIT_PATH) is the caller's, and the hook's caller is the service.
UNIT_PATH = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
)


def read_aliases(unit_path: tuple[str, ...] = UNIT_PATH) -> dict[str, str]:
    """name -> the unit name its symlink points to, for every unit-file symlink whose target
    has another name (the first directory naming a unit wins; /dev/null masks are not
    aliases, and a regular file earlier in the path shadows a symlink later)."""
    seen: set[str] = set()
    aliases: dict[str, str] = {}
    for directory in unit_path:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name in seen or "." not in name or name.startswith("."):
                continue
            seen.add(name)
            if not entry.is_symlink():
                continue
            try:
                target = os.path.basename(os.readlink(entry.path))
            except OSError:
                continue
            if target != name and target.rpartition(".")[2] == name.rpartition(".")[2]:
                aliases[name] = target
    return aliases


def unit_aliases(units: Collection[str], unit_path: tuple[str, ...] = UNIT_PATH) -> dict[str, str]:
    """The aliases on disk when some owner is bound to a unit (else none are read)."""
    return read_aliases(unit_path) if units else {}

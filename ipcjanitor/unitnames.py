"""systemd's unit-name grammar, as far as ipcjanitor needs it: templates and their instances.

PURE, and on the ground floor: the policy, the process table, learn and the hook all bind
objects to units through these two functions.
"""

from __future__ import annotations


def template_parts(name: str) -> tuple[str, str] | None:
    """(prefix, type) when `name` is a template unit name as systemd reads one: its first "@"
    directly followed by ".TYPE", the type having no dot ("worker@.service"). Anything else
    with an "@" is an instance ("app@blue@.service" is instance "blue@" of "app@.service")."""
    prefix, at, rest = name.partition("@")
    if not at or not prefix or not rest.startswith(".") or "." in rest[1:] or not rest[1:]:
        return None
    return prefix, rest[1:]


def unit_matches(pattern: str, unit: str) -> bool:
    """A template `worker@.service` matches every instance `worker@X.service` (systemd's rule:
    the instance is what lies between the first "@" and the last "."); other names match
    exactly. So a pattern binds a unit only as the unit's own name or its template's."""
    parts = template_parts(pattern)
    if parts is None or pattern == unit:  # a template also names itself (install-hook)
        return pattern == unit
    prefix, kind = parts
    name, dot, unit_kind = unit.rpartition(".")
    return (
        bool(dot)
        and unit_kind == kind
        and name.startswith(prefix + "@")
        and (len(name) > len(prefix) + 1)
    )


UNIT_TYPES = ("service", "socket", "target", "device", "mount", "automount", "swap", "timer",
              "path", "slice", "scope")  # fmt: skip


def with_type(name: str) -> str:
    """A name as systemctl completes one: "leaky" is "leaky.service"; a name that ends in a
    unit type ("app.socket", "worker@.service") is left as it is."""
    _, dot, kind = name.rpartition(".")
    return name if dot and kind in UNIT_TYPES else f"{name}.service"

"""systemd's unit-name grammar, as far as ipcjanitor needs it: templates and their instances.

PURE, and on the ground floor: the policy, the process table, learn and the hook all bind
objects to units through these two functions.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Mapping


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


ALIAS_HOPS = 16  # systemd follows alias chains too; a loop ends here, at the last name seen


def primary_name(name: str, aliases: Mapping[str, str]) -> str:
    """The name systemd runs `name` under, given the unit-file aliases (name -> target, as
    systemd.unitfiles.read_aliases reads them): a chain is followed; an instance whose own
    name is no alias takes its template's alias (autovt@tty1.service is getty@tty1.service);
    a name that is no alias is its own primary name."""
    for _ in range(ALIAS_HOPS):
        target = aliases.get(name)
        if target is None:
            prefix, at, rest = name.partition("@")
            instance, dot, kind = rest.rpartition(".")
            template = aliases.get(f"{prefix}@.{kind}") if at and instance and dot else None
            parts = template_parts(template) if template is not None else None
            if parts is None:
                return name
            target = f"{parts[0]}@{instance}.{kind}"
        if target == name:
            return name
        name = target
    return name


def names_of(unit: str, aliases: Mapping[str, str]) -> list[str]:
    """Every name a policy may bind `unit` by: itself, its template, and each alias of
    either (an alias template also by the instance's name under it)."""
    prefix, at, rest = unit.partition("@")
    instance, _, kind = rest.rpartition(".")
    template = f"{prefix}@.{kind}" if at and instance else None
    names = [unit, *([template] if template else [])]
    for alias in aliases:
        target = primary_name(alias, aliases)
        if target == unit:
            names.append(alias)
        elif template is not None and target == template:
            names += [alias, f"{alias.partition('@')[0]}@{instance}.{kind}"]
    return names

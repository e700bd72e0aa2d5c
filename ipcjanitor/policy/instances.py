"""Template owners: one owner per instance, found by matching `%i` ftok paths on disk.

An owner bound to `worker@.service` keeps all its objects while any instance runs. Where its
ftok paths name each instance's own file (`/srv/worker/%i/queue`), the objects can be told
apart: each instance found is an owner of its own (`workers@2`, unit `worker@2.service`,
that file's key), alive while that instance runs, so the hook of a killed instance frees its
objects while the others run. Everything else of the template owner (keys, ftok without %i,
private) stays shared: kept while any instance runs.

Instances are the names in the directory holding the first %i whose path (every %i the same
instance) exists and is a unit instance name. As root, that directory and those above it must
be root's alone, like the policy's own (chase.py): whoever can add an entry there could add
an owner.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from ..chase import Refused, list_directory
from ..errors import PolicyProblem
from .model import Owner
from .parse import Skipped, ftok_claim, instance_parts

# systemd's unit name characters (unit-name.c, VALID_CHARS_WITH_AT): what an instance may be
_INSTANCE = re.compile(r"[A-Za-z0-9:_.\\@-]+")


Found = dict[str, list[tuple[int, str, int]]]  # instance -> (key, path, proj) of its ftok files


def expand(owners: list[Owner], strict: bool) -> tuple[list[Owner], list[str], list[PolicyProblem]]:
    """Each owner, followed by one owner per instance of each template owner; and the
    warnings and problems met."""
    out: list[Owner] = []
    warnings: list[str] = []
    problems: list[PolicyProblem] = []
    named = {o.name: o for o in owners}
    for t in owners:
        if not t.per_instance or t.template is not None:
            out.append(t)
            continue
        where = f"{t.source}: [owners.{t.name}]"
        keys, steered = _instance_keys(t, strict, where, warnings)
        shared = _shared_keys(keys)
        for k, insts in sorted(shared.items()):
            warnings.append(
                f"{where} key 0x{k:08x} is the ftok key of instances {', '.join(insts)}: it "
                "cannot tell them apart, so it is shared (kept while any instance runs)"
            )
        out.append(
            t._replace(
                key_ranges=(*t.key_ranges, *((k, k) for k in sorted(shared))),
                steered=(*t.steered, *sorted(steered & set(shared))),
            )
        )
        for instance in sorted(keys, key=_natural):
            own = [(k, path, proj) for k, path, proj in keys[instance] if k not in shared]
            name = f"{t.name}@{instance}"
            if not own:
                continue
            if name in named:  # an owner of the policy, or another template's instance
                problems.append(_clash(named[name], name, t, instance))
                continue
            named[name] = t._replace(name=name, template=t.name, instance=instance)
            out.append(
                t._replace(
                    name=name,
                    key_ranges=tuple((k, k) for k in dict.fromkeys(k for k, _, _ in own)),
                    steered=tuple(sorted({k for k, _, _ in own} & steered)),
                    unit=(t.unit or "").replace("@.", f"@{instance}.", 1),
                    private=False,
                    per_instance=tuple((path, proj) for _, path, proj in own),
                    template=t.name,
                    instance=instance,
                )
            )
    return out, warnings, problems


def _instance_keys(
    t: Owner, strict: bool, where: str, warnings: list[str]
) -> tuple[Found, set[int]]:
    """The ftok keys of each instance found on disk, and those a non-root user can steer."""
    keys: Found = {}
    steered: set[int] = set()  # keys of paths a non-root user controls
    for pattern, proj in t.per_instance:
        for instance, path in _instances(pattern, strict, where, warnings):
            try:
                key, steerable = ftok_claim(path, proj, t.uid, strict)
            except Skipped as skip:
                warnings.append(f"{where} {skip}: that instance's ftok entry is skipped")
                continue
            keys.setdefault(instance, []).append((key, path, proj))
            if steerable:
                steered.add(key)
    return keys, steered


def _shared_keys(keys: Found) -> dict[int, list[str]]:
    """Keys that more than one instance's files give (ftok collides): key -> instances."""
    holders: dict[int, list[str]] = {}
    for instance, found in keys.items():
        for k in dict.fromkeys(k for k, _, _ in found):
            holders.setdefault(k, []).append(instance)
    return {k: sorted(i, key=_natural) for k, i in holders.items() if len(i) > 1}


def _clash(clash: Owner, name: str, t: Owner, instance: str) -> PolicyProblem:
    """An instance owner named like an owner already there: the policy must rename one."""
    path, _, line = clash.source.rpartition(":")
    what = (
        f"instance {clash.instance} of template owner {clash.template!r}"
        if clash.template
        else f"owner {name!r}"
    )
    return PolicyProblem(
        path or clash.source,
        int(line) if line.isascii() and line.isdigit() else None,
        f"{what} ({clash.source}) and instance {instance} of template owner "
        f"{t.name!r} ({t.source}) are both named {name!r}: owner names must "
        "tell owners apart (a hook cleans by name): rename one",
    )


def _instances(
    pattern: str, strict: bool, where: str, warnings: list[str]
) -> Iterator[tuple[str, str]]:
    """(instance, its path) for each instance of an ftok path pattern found on disk."""
    parts = instance_parts(pattern)
    directory, _, head = parts[0].rpartition("/")
    directory = directory or "/"
    component = [head]  # the name holding the first %i, split at each %i in it
    for part in parts[1:]:
        component.append(part.partition("/")[0])
        if "/" in part:
            break
    # the first %i is the instance; any other in the same name must repeat it
    match = re.compile(
        "(?P<i>[^/]+)".join([re.escape(component[0]), "(?P=i)".join(map(re.escape, component[1:]))])
    )
    try:
        names = list_directory(directory, strict)
    except Refused as exc:
        why = f"{directory} does not exist" if exc.missing else exc.problem
        warnings.append(f"{where} ftok path {pattern}: no instance is looked for: {why}")
        return
    for name in names:
        m = match.fullmatch(name)
        if m is None or name.startswith("."):
            continue
        instance = m.group("i")
        path = instance.join(parts)
        try:
            exists = _exists(path)
        except OSError as exc:
            warnings.append(f"{where} ftok path {path} cannot be read ({exc.strerror})")
            continue
        if not exists:
            continue
        if not _INSTANCE.fullmatch(instance) or instance.startswith("."):
            warnings.append(
                f"{where} ftok path {path}: {instance!r} is not a unit instance name "
                "(systemd-escape it): no owner for it"
            )
            continue
        yield instance, path


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _natural(instance: str) -> list[str | int]:
    """Sort key: worker@2 before worker@10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", instance)]

"""`scan -v` hints: half of a running service claimed.

A service may keep the only pointer to its POSIX objects inside its System V objects:
PostgreSQL writes the handle of its dynamic shared memory control segment into its System V
segment's header, and at its next start finds its old /dev/shm/PostgreSQL.* files only
through that dead segment. An owner that claims the segment but not the files makes every
crash leak them for ever (README "PostgreSQL"). So: for each owner bound to a unit that
claims System V objects of this scan, the /dev/shm files the unit's processes map that no
owner claims are named, with a `names` line to claim them. Read only under -v.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..escape import safe_name
from ..kernel.holders import Identity, mapped_files
from ..kernel.posix import SEM_PREFIX, SHM_ROOT, list_posix
from ..kernel.processes import own_pids, unit_processes
from ..model import Decision, PosixKind, PosixObject
from ..policy.model import Owner, Policy
from ..policy.names import to_regex

SHOWN = 6  # files named in one hint; the rest are counted
_SEPARATORS = "._-/"
_SPECIAL = frozenset('*?[]\\"')  # a stem with these is no plain pattern prefix


def unclaimed_mappings(
    policy: Policy,
    decisions: Sequence[Decision],
    procfs: Path = Path("/proc"),
    shm_root: Path = SHM_ROOT,
) -> list[str]:
    """One hint per owner whose unit runs, claims System V objects here, and whose processes
    map files under shm_root that no owner claims."""
    names = dict.fromkeys(d.owner for d in decisions if d.owner is not None)
    owners = [o for n in names if (o := policy.owner(n)) is not None and o.unit is not None]
    if not owners:
        return []
    pids = unit_processes({o.unit for o in owners if o.unit}, procfs, own_pids())
    if not any(pids.values()):
        return []
    try:
        dev = os.stat(shm_root).st_dev
    except OSError:
        return []
    mapped = {unit: mapped_files(p, dev, procfs) for unit, p in pids.items()}
    listing = list_posix({PosixKind.SHM, PosixKind.SEM}, procfs, shm_root)
    return compose(policy, owners, mapped, listing.objects, shm_root)


def compose(
    policy: Policy,
    owners: Sequence[Owner],
    mapped: Mapping[str, set[Identity]],
    objects: Sequence[PosixObject],
    shm_root: Path = SHM_ROOT,
) -> list[str]:
    """PURE: the hints, from what each unit's processes map and what /dev/shm holds."""
    hints = []
    for owner in owners:
        seen = mapped.get(owner.unit or "", set())
        files = [o for o in objects if o.identity in seen and not policy.name_owners(o)]
        if files:
            hints.append(_hint(owner, files, objects, policy, shm_root))
    return hints


def _path(obj: PosixObject, shm_root: Path) -> str:
    entry = SEM_PREFIX + obj.name if obj.kind is PosixKind.SEM else obj.name
    return f"{shm_root}/{safe_name(entry)}"


def _hint(
    owner: Owner,
    files: Sequence[PosixObject],
    objects: Sequence[PosixObject],
    policy: Policy,
    shm_root: Path,
) -> str:
    shown = ", ".join(_path(f, shm_root) for f in files[:SHOWN])
    more = f" and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
    names = suggest_names(files, objects, policy)
    claim = f"names = [{names}]" if names else "names = [...] matching them"
    return (
        f"owner {owner.name} claims the System V objects of {owner.unit}, but files its "
        f"processes map under {shm_root} are claimed by no owner: {shown}{more}. A service "
        "may find such files again only through its old System V objects (PostgreSQL finds "
        "its dynamic shared memory through its segment's header), so removing those alone "
        "leaves these behind after every crash, for ever; claim them in the same owner: "
        f"{claim}"
    )


def _stem(names: Sequence[str]) -> str | None:
    """The names' common prefix up to the last separator before any digit: "PostgreSQL."
    of PostgreSQL.2299180038 and PostgreSQL.542949300; None without one."""
    prefix = os.path.commonprefix(list(names))  # noqa: RUF071 (characters are meant)
    digit = next((i for i, c in enumerate(prefix) if c.isdigit()), len(prefix))
    cut = max(prefix.rfind(s, 0, digit) for s in _SEPARATORS)
    stem = prefix[: cut + 1]
    if cut < 0 or not stem.isprintable() or _SPECIAL & set(stem):
        return None
    return stem


def suggest_names(
    files: Sequence[PosixObject], objects: Sequence[PosixObject], policy: Policy
) -> str | None:
    """What to write between the brackets of `names = [...]`: a pattern when the files share
    a stem and it matches no other user's file and none another owner claims, else the exact
    names; None when a name is not printable (a hostile one is never written into a policy)."""
    names = [f.name for f in files]
    if not all(n.isprintable() and not _SPECIAL & set(n) for n in names):
        return None
    stem = _stem(names)
    if stem is not None:
        regex = to_regex([stem + "*"])
        uids = {f.uid for f in files}
        mine = {f.identity for f in files}
        clash = any(
            regex.match(o.name) and (o.uid not in uids or policy.name_owners(o))
            for o in objects
            if o.identity not in mine
        )
        if not clash and all(regex.match(n) for n in names):
            return f'"{stem}*"'
    return ", ".join(f'"{n}"' for n in dict.fromkeys(names))

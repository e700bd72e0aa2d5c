"""The resolved policy: which owner claims which keys, and a fast key -> owner index.

What decide.py needs and nothing more: no TOML parser, no file access. policy_parse.py turns
TOML into Owners; policy_load.py finds, checks and merges the files into a Policy.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import NamedTuple

from .model import IpcKind, IpcObject

DEFAULT_MIN_AGE = 600  # "10m": an idle object is left alone for ten minutes


class Owner(NamedTuple):
    """One owning service: the keys it claims and how careful to be with them."""

    name: str
    key_ranges: tuple[tuple[int, int], ...] = ()  # inclusive; ftok keys as (k, k)
    kinds: frozenset[IpcKind] = frozenset(IpcKind)
    unit: str | None = None
    uid: int | None = None
    cuid: int | None = None  # the creator's uid when it differs from uid (Apache's semaphores)
    private: bool = False
    min_age: int | None = None  # None: the policy's global min_age
    keep_queued_messages: bool = True
    source: str = "<embedded>"

    @property
    def creator_uid(self) -> int | None:
        """The cuid an object must have: cuid if given, else uid (the contract's rule)."""
        return self.uid if self.cuid is None else self.cuid

    def matches_unit(self, unit: str) -> bool:
        return self.unit is not None and unit_matches(self.unit, unit)


class Policy:
    """The resolved policy: owners by name, and a fast key -> owner index. Read-only."""

    __slots__ = (
        "_index",
        "_private",
        "min_age",
        "owners",
        "pid_namespace_complete",
        "sources",
        "warnings",
    )

    def __init__(
        self,
        owners: tuple[Owner, ...] = (),
        min_age: int = DEFAULT_MIN_AGE,
        sources: tuple[str, ...] = (),
        warnings: tuple[str, ...] = (),
        pid_namespace_complete: bool = False,
    ) -> None:
        self.owners = owners
        self.min_age = min_age
        self.sources = sources
        self.warnings = warnings
        # the operator's word: our pid namespace holds every process of our IPC namespace
        self.pid_namespace_complete = pid_namespace_complete
        self._index: dict[IpcKind, tuple[list[int], list[tuple[int, Owner]]]] = {}
        self._private: dict[tuple[IpcKind, int], Owner] = {}
        for kind in IpcKind:
            spans = key_spans(self.owners, kind)
            self._index[kind] = ([s[0] for s in spans], [(s[1], s[2]) for s in spans])
            for o in self.owners:
                if o.private and o.uid is not None and kind in o.kinds:
                    self._private[(kind, o.uid)] = o

    def owner_of(self, obj: IpcObject, check_uid: bool = True) -> Owner | None:
        """The owner claiming this object, or None: key (or IPC_PRIVATE + uid), kind and uid."""
        if obj.key == 0:
            owner = self._private.get((obj.kind, obj.uid))
            return owner if owner is not None and obj.cuid == owner.creator_uid else None
        lows, spans = self._index[obj.kind]
        i = bisect.bisect_right(lows, obj.key) - 1
        if i < 0 or spans[i][0] < obj.key:
            return None
        owner = spans[i][1]
        if (
            check_uid
            and owner.uid is not None
            and (obj.uid != owner.uid or obj.cuid != owner.creator_uid)
        ):
            return None
        return owner

    def grace(self, owner: Owner) -> int:
        """The owner's min_age, or the global one when it sets none."""
        return self.min_age if owner.min_age is None else owner.min_age

    def owner(self, name: str) -> Owner | None:
        return next((o for o in self.owners if o.name == name), None)

    def owners_for_unit(self, unit: str) -> tuple[Owner, ...]:
        return tuple(o for o in self.owners if o.matches_unit(unit))


def key_spans(owners: Iterable[Owner], kind: IpcKind) -> list[tuple[int, int, Owner]]:
    """Every (low, high, owner) key span of one kind, by key (ties: by owner name)."""
    spans = [(lo, hi, o) for o in owners if kind in o.kinds for lo, hi in o.key_ranges]
    return sorted(spans, key=lambda s: (s[0], s[1], s[2].name))


EMBEDDED_DEFAULT = Policy(sources=("<embedded default: no owners>",))


def unit_matches(pattern: str, unit: str) -> bool:
    """`worker@.service` matches every instance `worker@X.service`; other names match exactly."""
    if "@." in pattern:
        prefix, suffix = pattern.split("@.", 1)
        return unit.startswith(prefix + "@") and unit.endswith("." + suffix)
    return pattern == unit


def format_duration(seconds: float) -> str:
    """Short human form: 45s, 12m, 3h, 3h05m, 4d."""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m:02d}m" if m else f"{h}h"
    return f"{s // 86400}d"


def unitless_warnings(policy: Policy) -> list[str]:
    """One warning per owner without a unit: what its proof of death is worth."""
    return [
        f"owner {o.name} ({o.source}) has no unit: only the pids the kernel recorded and idle "
        "time prove its objects dead, and they miss a live process that holds one without a "
        "trace (a semaphore set's holder that has not operated on it yet, a thread id recorded "
        'instead of its process); bind it to its service: unit = "NAME.service"'
        for o in policy.owners
        if o.unit is None
    ]


def describe(policy: Policy) -> Iterable[str]:
    """Human lines for `policy check`."""
    yield f"policy from: {', '.join(policy.sources) or '<embedded default>'}"
    yield f"global min_age: {format_duration(policy.min_age)}"
    yield f"pid_namespace_complete: {str(policy.pid_namespace_complete).lower()}"
    if not policy.owners:
        yield "no owners: every object is unowned and nothing will be removed"
    for o in policy.owners:
        keys = ", ".join(
            f"0x{lo:08x}" if lo == hi else f"0x{lo:08x}-0x{hi:08x}" for lo, hi in o.key_ranges
        )
        yield f"[{o.name}]  ({o.source})"
        yield f"  unit:  {o.unit or '-'}"
        yield f"  keys:  {keys or '-'}"
        yield f"  kinds: {', '.join(k.value for k in IpcKind if k in o.kinds)}"
        uid = "any" if o.uid is None else str(o.uid)
        if o.cuid is not None:
            uid += f" (created by uid {o.cuid})"
        yield f"  uid:   {uid}{'  + IPC_PRIVATE' if o.private else ''}"
        keep = str(o.keep_queued_messages).lower()
        yield f"  min_age: {format_duration(policy.grace(o))}   keep_queued_messages: {keep}"

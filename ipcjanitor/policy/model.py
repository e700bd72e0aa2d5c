"""The resolved policy: which owner claims which keys, and a fast key -> owner index.

What decide.py needs and nothing more: no TOML parser, no file access. policy_parse.py turns
TOML into Owners; policy_load.py finds, checks and merges the files into a Policy.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from ..model import IpcKind, IpcObject, PosixKind, PosixObject
from ..unitnames import primary_name, unit_matches
from .names import to_regex
from .timespan import USEC_PER_SEC, format_timespan

DEFAULT_MIN_AGE = 600  # "10m": an idle object is left alone for ten minutes


class Owner(NamedTuple):
    """One owning service: the keys it claims and how careful to be with them."""

    name: str
    key_ranges: tuple[tuple[int, int], ...] = ()  # inclusive; ftok keys as (k, k)
    kinds: frozenset[IpcKind] = frozenset(IpcKind)
    unit: str | None = None
    uid: int | None = None  # the object's owner uid (ipcs OWNER) must be this
    cuid: int | None = None  # narrows: its creator's uid must be this too (Apache: root)
    private: bool = False
    min_age: float | None = None  # seconds; None: the policy's global min_age
    keep_queued_messages: bool = True
    source: str = "<embedded>"
    # a template owner (unit "worker@.service"): its ftok paths with %i, as (path, proj), from
    # which the loader makes one owner per instance found on disk (policy_instances.py); an
    # instance's owner: those paths, of its instance
    per_instance: tuple[tuple[str, int], ...] = ()
    # keys claimed by an ftok path a non-root user controls (allowed with uid = that user):
    # that user could point them at another owner's key, so a clash skips them, not the run
    steered: tuple[int, ...] = ()
    template: str | None = None  # an instance's owner: its template owner's name ...
    instance: str | None = None  # ... and the instance ("2" of worker@2.service)
    # POSIX objects claimed by name (policy/names.py patterns), for these POSIX kinds
    names: tuple[str, ...] = ()
    posix_kinds: frozenset[PosixKind] = frozenset()

    def admits(self, obj: IpcObject) -> bool:
        """Whether the object's owner uid and creator uid are the ones this owner claims."""
        return (self.uid is None or obj.uid == self.uid) and (
            self.cuid is None or obj.cuid == self.cuid
        )

    def matches_unit(self, unit: str) -> bool:
        return self.unit is not None and unit_matches(self.unit, unit)


class Policy:
    """The resolved policy: owners by name, and a fast key -> owner index. Read-only."""

    __slots__ = (
        "_by_name",
        "_by_uid",
        "_claimed",
        "_index",
        "_name_owners",
        "_private",
        "min_age",
        "owners",
        "pid_namespace_complete",
        "sources",
        "user_name",
        "warnings",
    )

    def __init__(
        self,
        owners: tuple[Owner, ...] = (),
        min_age: float = DEFAULT_MIN_AGE,
        sources: tuple[str, ...] = (),
        warnings: tuple[str, ...] = (),
        *,
        pid_namespace_complete: bool = False,
        user_name: Callable[[int], str | None] = lambda uid: None,
    ) -> None:
        self.owners = owners
        self.min_age = min_age
        self.sources = sources
        self.warnings = warnings
        # the operator's word: our pid namespace holds every process of our IPC namespace
        self.pid_namespace_complete = pid_namespace_complete
        # a uid's user name for the reasons (the loader passes the user database's; pure here)
        self.user_name = user_name
        self._index: dict[IpcKind, tuple[list[int], list[tuple[int, Owner]]]] = {}
        # IPC_PRIVATE: owners of one uid may split its objects by creator (disjoint cuids)
        self._private: dict[tuple[IpcKind, int], tuple[Owner, ...]] = {}
        for kind in IpcKind:
            spans = key_spans(self.owners, kind)
            self._index[kind] = ([s[0] for s in spans], [(s[1], s[2]) for s in spans])
            for o in self.owners:
                if o.private and o.uid is not None and kind in o.kinds:
                    self._private[(kind, o.uid)] = (*self._private.get((kind, o.uid), ()), o)
        # for the reasons of unowned objects: is a key anyone's for any kind (lows, and the
        # highest high up to each), and the owners that name each uid
        every = sorted((lo, hi) for o in self.owners for lo, hi in o.key_ranges)
        reach = list(itertools.accumulate((hi for _, hi in every), max))
        self._claimed = ([lo for lo, _ in every], reach)
        # POSIX: per kind, each owner claiming it with its patterns as one regex
        self._by_name = {
            kind: tuple((o, to_regex(o.names)) for o in self.owners if kind in o.posix_kinds)
            for kind in PosixKind
        }
        # the answer for each (kind, name, uid) asked: decide, the sole-owner check and the
        # probe of units each ask it for every object
        self._name_owners: dict[tuple[PosixKind, str, int], tuple[Owner, ...]] = {}
        self._by_uid: dict[int, tuple[Owner, ...]] = {}
        for o in self.owners:
            if o.uid is not None:
                self._by_uid[o.uid] = (*self._by_uid.get(o.uid, ()), o)

    def owner_of(self, obj: IpcObject) -> Owner | None:
        """The owner claiming this object, or None: key (or IPC_PRIVATE + uid), kind, uids."""
        if obj.key == 0:
            for candidate in self._private.get((obj.kind, obj.uid), ()):
                if candidate.cuid is None or obj.cuid == candidate.cuid:
                    return candidate
            return None
        owner = self.key_owner(obj.kind, obj.key)
        if owner is None:
            return None
        # Owner.admits, inline: this runs once per object of the tables
        if (owner.uid is None or obj.uid == owner.uid) and (
            owner.cuid is None or obj.cuid == owner.cuid
        ):
            return owner
        return None

    def name_owners(self, obj: PosixObject) -> tuple[Owner, ...]:
        """Every owner whose patterns match the object's name for its kind and whose uid is
        the file's: one is its owner; two or more make it unowned (never removed)."""
        asked = (obj.kind, obj.name, obj.uid)
        found = self._name_owners.get(asked)
        if found is None:
            found = self._name_owners[asked] = tuple(
                o
                for o, regex in self._by_name[obj.kind]
                if (o.uid is None or o.uid == obj.uid) and regex.match(obj.name)
            )
        return found

    def claims_posix(self, kind: PosixKind) -> bool:
        """Whether any owner claims objects of this POSIX kind."""
        return bool(self._by_name[kind])

    def key_claimed(self, key: int) -> bool:
        """Whether any owner's keys hold this key, for any kind."""
        lows, reach = self._claimed
        i = bisect.bisect_right(lows, key) - 1
        return i >= 0 and reach[i] >= key

    def owners_of_uid(self, uid: int) -> tuple[Owner, ...]:
        """The owners whose `uid` is this one, in policy order."""
        return self._by_uid.get(uid, ())

    def key_owner(self, kind: IpcKind, key: int) -> Owner | None:
        """The owner whose keys hold this key for this kind, whatever the object's uids."""
        lows, spans = self._index[kind]
        i = bisect.bisect_right(lows, key) - 1
        if i < 0 or spans[i][0] < key:
            return None
        return spans[i][1]

    def grace(self, owner: Owner) -> float:
        """The owner's min_age, or the global one when it sets none."""
        return self.min_age if owner.min_age is None else owner.min_age

    def owner(self, name: str) -> Owner | None:
        return next((o for o in self.owners if o.name == name), None)

    def owners_for_unit(
        self, unit: str, aliases: Mapping[str, str] = MappingProxyType({})
    ) -> tuple[Owner, ...]:
        """The owners bound to `unit`, by its name or, where an owner names an alias of it
        (`aliases`: systemd.unitfiles.read_aliases), by the name systemd runs it as."""
        return tuple(
            o
            for o in self.owners
            if o.matches_unit(unit)
            or (o.unit is not None and unit_matches(primary_name(o.unit, aliases), unit))
        )


def key_spans(owners: Iterable[Owner], kind: IpcKind) -> list[tuple[int, int, Owner]]:
    """Every (low, high, owner) key span of one kind, by key (ties: by owner name)."""
    spans = [(lo, hi, o) for o in owners if kind in o.kinds for lo, hi in o.key_ranges]
    return sorted(spans, key=lambda s: (s[0], s[1], s[2].name))


EMBEDDED_DEFAULT = Policy(sources=("<embedded default: no owners>",))


def format_duration(seconds: float, exact: bool = False) -> str:
    """A duration as systemd prints one ("1h 30min", "500ms", "3h 4min 5s"): to the second
    for what was measured, `exact` for what the policy says (it shows what was written)."""
    return format_timespan(round(seconds * USEC_PER_SEC), 1 if exact else USEC_PER_SEC)


# The least min_age for an owner without a unit. An object whose key or id another process
# keeps inside its own segment is stale by the contract from its creator's exit until the
# next process attaches it: peers' suites measured that gap at a moment (PostgreSQL with
# dynamic_shared_memory_type = sysv refused connections in 2-4 of 100 cycles at "0s", never
# at "2s") and at 17 s (IPC::Shareable's t/99, 48 of 48 runs broken at "0s"). Five minutes
# is over ten times the longest measured gap, allows for a loaded host, and lets the default
# (10min) pass; a unit-less owner is the timer's to clean, so nothing is urgent there.
UNITLESS_MIN_AGE_FLOOR = 300.0


def alias_notes(policy: Policy, aliases: Mapping[str, str]) -> list[str]:
    """One note per owner whose unit is an alias: it is judged by the name systemd runs."""
    notes = []
    for o in policy.owners:
        primary = primary_name(o.unit, aliases) if o.unit else None
        if primary is not None and primary != o.unit:
            notes.append(
                f"owner {o.name} ({o.source}): {o.unit} is an alias of {primary}, the name "
                f"systemd runs it as: its processes, its stop and its hook are {primary}'s "
                f'(write unit = "{primary}" to say so)'
            )
    return notes


def handoff_warnings(policy: Policy) -> list[str]:
    """One warning per owner without a unit whose min_age is under UNITLESS_MIN_AGE_FLOOR."""
    floor = format_duration(UNITLESS_MIN_AGE_FLOOR, exact=True)
    return [
        f"owner {o.name} ({o.source}) has no unit and min_age "
        f"{format_duration(policy.grace(o), exact=True)}: an object handed off through another "
        "segment (its key or id kept there for the next process) is stale from its creator's "
        "exit until that process attaches it — measured: a moment for PostgreSQL with "
        "dynamic_shared_memory_type = sysv, 17 s for IPC::Shareable; set "
        f'min_age = "{floor}" or more, or bind it to its service: unit = "NAME.service"'
        for o in policy.owners
        if o.unit is None and policy.grace(o) < UNITLESS_MIN_AGE_FLOOR
    ]


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


def _proj(proj: int) -> str:
    return repr(chr(proj)) if 0x20 < proj < 0x7F else str(proj)


def user(policy: Policy, uid: int) -> str:
    """A uid as reasons and `policy check` write it: 33 (www-data), or 4321 without a name."""
    name = policy.user_name(uid)
    return f"{uid} ({name})" if name else str(uid)


def describe(policy: Policy) -> Iterable[str]:
    """Human lines for `policy check`."""
    yield f"policy from: {', '.join(policy.sources) or '<embedded default>'}"
    yield f"global min_age: {format_duration(policy.min_age, exact=True)}"
    yield f"pid_namespace_complete: {str(policy.pid_namespace_complete).lower()}"
    if not policy.owners:
        yield "no owners: every object is unowned and nothing will be removed"
    for o in policy.owners:
        keys = ", ".join(
            f"0x{lo:08x}" if lo == hi else f"0x{lo:08x}-0x{hi:08x}" for lo, hi in o.key_ranges
        )
        if o.template is None:
            yield f"[{o.name}]  ({o.source})"
        else:
            yield f"[{o.name}]  (instance {o.instance} of {o.template}, {o.source})"
        yield f"  unit:  {o.unit or '-'}"
        yield f"  keys:  {keys or '-'}"
        for path, proj in o.per_instance:
            found = [i.name for i in policy.owners if i.template == o.name] or ["no instance"]
            if o.template is None:
                yield f"  per instance: ftok {path} proj {_proj(proj)} -> {', '.join(found)}"
            else:
                yield f"  ftok:  {path} proj {_proj(proj)}"
        if o.names:
            yield f"  names: {', '.join(o.names)}"
        sysv = not o.names or o.key_ranges or o.private or o.per_instance
        kinds = [k.value for k in IpcKind if k in o.kinds and sysv]
        kinds += [k.value for k in PosixKind if k in o.posix_kinds]
        yield f"  kinds: {', '.join(kinds)}"
        uid = "any"
        if o.uid is not None:
            by = "any user" if o.cuid is None else f"uid {user(policy, o.cuid)}"
            uid = f"owner uid {user(policy, o.uid)}, created by {by}"
        yield f"  uid:   {uid}{'  + IPC_PRIVATE' if o.private else ''}"
        keep = str(o.keep_queued_messages).lower()
        grace = format_duration(policy.grace(o), exact=True)
        yield f"  min_age: {grace}   keep_queued_messages: {keep}"

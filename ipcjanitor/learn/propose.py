"""What `learn` saw a unit use, and the policy owner table it proposes from that. Pure.

learn.py watches the unit and hands over a Watch; propose() turns it into tables (ftok
entries for keys that a file the unit touches explains, the other keys as single keys or
dense ranges, IPC_PRIVATE objects by uid), leaving out every key another owner already
claims; render() prints them as TOML that the real policy parser reads back.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from ..escape import must_escape, safe_name
from ..model import IpcKind, IpcObject, Key, Pid, PosixKind, PosixObject
from ..policy.model import Owner, Policy
from ..policy.names import to_regex
from .names import Foreign, Proposed, claimable, propose_names

# A run of keys is claimed as one range when it holds at least MIN_RUN keys that were seen
# and at least half of the keys it spans were seen (README "Writing a policy").
MIN_RUN = 3
# Singles sharing their top 16 bits this often get a hint that the whole block may be theirs.
PREFIX_HINT = 3
_MAX_OBJECTS_LISTED = 5  # per entry's comment
_MAX_PIDS_LISTED = 3  # per kind of evidence in one comment line
_COMMAND_WIDTH = 72


class Process(NamedTuple):
    """One process seen in the unit during the watch."""

    pid: Pid
    start: float  # epoch seconds
    uid: int  # effective uid: the one IPC objects get as their creator's
    command: str  # its command line, as read (may hold anything: never trusted in output)


class Candidate(NamedTuple):
    """A file a unit process names, executes, opens, maps or runs in: a possible ftok path."""

    path: str
    dev: int
    ino: int
    how: str  # "on the command line of pid 812"
    rank: int  # lower is stronger evidence that the process computes keys from it


class Claimant(NamedTuple):
    """A live process outside the unit seen with a hand on an object during the watch."""

    what: str  # what it did, as a verb: "attached", "created", "last attached or detached"
    pid: Pid  # 0: processes learn could not name (another pid namespace, unreadable maps)
    command: str  # its comm, as read (may hold anything: never trusted in output)
    unit: str | None  # the unit it runs in; None: none


class Sighting(NamedTuple):
    """One object the unit was seen using, and each way it was seen, counted in samples."""

    obj: IpcObject  # as last read
    evidence: Mapping[tuple[str, Pid], int]  # (what, pid) -> samples; pid 0: not pid-bound
    samples: int  # in how many samples it was seen used at all
    others: tuple[Claimant, ...] = ()  # live processes outside the unit seen using it too


class PosixSighting(NamedTuple):
    """One POSIX object the unit was seen using: mapped, open or locked, counted in samples."""

    obj: PosixObject  # as last listed
    evidence: Mapping[tuple[str, Pid], int]  # ("mapped" | "open" | "locked", pid) -> samples
    samples: int
    others: tuple[Claimant, ...] = ()  # live processes outside the unit seen holding it too


class Watch(NamedTuple):
    """Everything one `learn` run saw."""

    unit: str
    seconds: float
    samples: int
    processes: Mapping[Pid, Process]
    sightings: tuple[Sighting, ...]
    candidates: tuple[Candidate, ...] = ()
    # key-0 objects present at the end that were not seen used: the private claim may cover them
    private_now: tuple[IpcObject, ...] = ()
    # the key of every object present during the watch: a range may not span one unclaimed
    present_keys: frozenset[Key] = frozenset()
    # POSIX: the objects the unit used; every object listed during the watch (the last
    # record of each); and the processes outside the unit seen holding any of them
    posix: tuple[PosixSighting, ...] = ()
    posix_present: tuple[PosixObject, ...] = ()
    posix_outside: Mapping[tuple[int, int], tuple[Claimant, ...]] = {}


class FtokEntry(NamedTuple):
    path: str
    proj: int
    how: str
    sightings: tuple[Sighting, ...]
    others: tuple[str, ...] = ()  # other files that give the same key


class KeyEntry(NamedTuple):
    low: Key
    high: Key
    sightings: tuple[Sighting, ...]


class NameEntry(NamedTuple):
    """One entry of `names`, with the sightings of the names it stands for."""

    proposed: Proposed
    sightings: tuple[PosixSighting, ...]


class Table(NamedTuple):
    """One proposed [owners.NAME] table."""

    name: str
    unit: str
    kinds: frozenset[IpcKind]
    ftok: tuple[FtokEntry, ...] = ()
    keys: tuple[KeyEntry, ...] = ()
    uid: int | None = None
    cuid: int | None = None  # only when it differs from uid
    private: tuple[Sighting, ...] = ()
    names: tuple[NameEntry, ...] = ()
    posix_kinds: frozenset[PosixKind] = frozenset()


class Proposal(NamedTuple):
    tables: tuple[Table, ...]
    # what was seen but is not proposed, and why: claimed by another owner, another uid, ...
    # (as read: they name processes' comms; escape.py escapes them where they are shown)
    left_out: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()


# -- keys ------------------------------------------------------------------------------------


def summarise_keys(keys: Iterable[Key]) -> list[tuple[Key, Key]]:
    """Sorted inclusive (low, high) entries covering exactly the given keys and the gaps of
    dense runs: a range needs MIN_RUN keys seen and at least half of its span seen."""
    ordered = sorted(set(keys))
    entries: list[tuple[Key, Key]] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and 2 * (j + 2 - i) >= ordered[j + 1] - ordered[i] + 1:
            j += 1
        if j + 1 - i >= MIN_RUN:
            entries.append((ordered[i], ordered[j]))
        else:
            entries.extend((k, k) for k in ordered[i : j + 1])
        i = j + 1
    return entries


def ftok_low_bits(dev: int, ino: int) -> int:
    """The 24 bits of ftok(3)'s key that come from the file: st_dev and st_ino bits."""
    return ((dev & 0xFF) << 16) | (ino & 0xFFFF)


def ftok_matches(key: Key, candidates: Iterable[Candidate]) -> list[tuple[Candidate, int]]:
    """Each (candidate, proj) with ftok(candidate, proj) == key, proj in 1..255; best first."""
    proj = key >> 24
    if not 0 < proj <= 0xFF:
        return []
    low = key & 0xFFFFFF
    found = [c for c in candidates if ftok_low_bits(c.dev, c.ino) == low]
    return [(c, proj) for c in sorted(found, key=lambda c: (c.rank, c.path))]


def _claimed_by(
    low: Key, high: Key, kinds: frozenset[IpcKind], owners: Iterable[Owner]
) -> Owner | None:
    for o in owners:
        if o.kinds & kinds and any(lo <= high and low <= hi for lo, hi in o.key_ranges):
            return o
    return None


def _private_claimed_by(
    uid: int, kinds: frozenset[IpcKind], owners: Iterable[Owner]
) -> Owner | None:
    return next((o for o in owners if o.private and o.uid == uid and o.kinds & kinds), None)


# -- proposing -------------------------------------------------------------------------------

# The evidence (with pid 0) the watcher adds for a set or queue that appeared during the watch
# and, in the first sample that showed it, was used by the unit's processes and nobody else's
APPEARED = "created during the watch: first seen used by the unit alone"
_MAX_CLAIMANTS = 3  # per note


def made_here(s: Sighting, watch: Watch) -> bool:
    """A unit process created the object: its recorded creator (shm) is one of them, or it
    appeared during the watch in the unit's hands alone (sets and queues record no creator)."""
    return any(
        (what == "creator" and pid in watch.processes) or (what == APPEARED and pid == 0)
        for what, pid in s.evidence
    )


def claimant_text(c: Claimant, unit: str) -> str:
    """'attached by pid 4242 (otherd) of other.service', as read: escape it to output it."""
    if c.pid == 0:
        return f"{c.what} by processes outside {unit}"
    where = f"of {c.unit}" if c.unit else "in no unit"
    return f"{c.what} by pid {c.pid} ({c.command}) {where}"


def _claimants(s: Sighting, unit: str) -> str:
    shown = [
        claimant_text(c, unit) + ("" if c.what == "created" else " too")
        for c in s.others[:_MAX_CLAIMANTS]
    ]
    more = len(s.others) - len(shown)
    return "; ".join(shown) + (f"; +{more} more" if more > 0 else "")


def _by_whose(watch: Watch) -> tuple[list[Sighting], list[str]]:
    """The sightings learn may claim, and a note for each of the others saying why not.

    Found by attacking learn: a worker of a unit with a root master attached another running
    service's world-readable root segment; learn claimed it, and the unit's hook later removed
    it under that service. An object is the unit's when a unit process made it, or when its
    owner or creator uid is a user of the unit's processes and no live process outside the
    unit was seen with it during the watch (attached, or recorded as creator or last user).
    """
    users = {p.uid for p in watch.processes.values()}
    ours: list[Sighting] = []
    notes: list[str] = []
    for s in watch.sightings:
        made = made_here(s, watch)
        if made or (s.others == () and (s.obj.uid in users or s.obj.cuid in users)):
            ours.append(s)
        elif s.others:
            notes.append(
                f"{_label(s.obj)} (key 0x{s.obj.key:08x}): {_claimants(s, watch.unit)}: "
                f"used by a live process outside {watch.unit} and not made by it, "
                "so its hook could remove it under that process; claim it by hand if it is "
                "this unit's"
            )
        else:
            notes.append(
                f"{_label(s.obj)} (uid {s.obj.uid}, cuid {s.obj.cuid}): neither uid is a user "
                "of the unit's processes and none of them created it: another service's "
                "object they only use? claim it by hand if it is this unit's"
            )
    return ours, notes


def propose(watch: Watch, name: str, existing: Policy) -> Proposal:
    """The tables for what the unit was seen using, minus what existing owners claim.

    An owner of the same name in `existing` is ignored: the proposal would replace it.
    """
    others = [o for o in existing.owners if o.name != name]
    ours, left_out = _by_whose(watch)
    keyed = [s for s in ours if s.obj.key != 0]
    private, combo, private_left = _claim_private([s for s in ours if s.obj.key == 0], others)
    left_out += private_left
    # a range may not span an object seen and not claimed: another service's, most likely
    mine = {s.obj.key for s in keyed}
    blockers = (watch.present_keys | {s.obj.key for s in watch.sightings}) - mine - {0}
    ftok_entries, key_entries, keyed_left = _claim_keys(
        keyed, watch.candidates, others, frozenset(blockers)
    )
    left_out += keyed_left
    tables = _tables(name, watch.unit, ftok=ftok_entries, keys=key_entries, private=private,
                     private_combo=combo, others=others)  # fmt: skip
    if combo is not None:
        left_out += _private_now(watch, private, combo)
    names, puid, names_left = propose_posix(watch, others)
    left_out += names_left
    if names:
        tables = _with_names(tables, name, watch.unit, names, puid)
    hints = _prefix_hints(key_entries, frozenset(blockers))
    return Proposal(tuple(tables), tuple(left_out), tuple(hints))


# -- POSIX names -----------------------------------------------------------------------------


def posix_label(obj: PosixObject) -> str:
    return f"{obj.kind.value} {obj.name!r}"


def _held_text(claimants: Sequence[Claimant], unit: str) -> str:
    shown = [claimant_text(c, unit) for c in claimants[:_MAX_CLAIMANTS]]
    more = len(claimants) - len(shown)
    return "; ".join(shown) + (f"; +{more} more" if more > 0 else "")


def _name_claimed_by(obj: PosixObject, owners: Sequence[Owner]) -> Owner | None:
    return next(
        (
            o
            for o in owners
            if obj.kind in o.posix_kinds
            and (o.uid is None or o.uid == obj.uid)
            and to_regex(o.names).match(obj.name)
        ),
        None,
    )


def _posix_ours(watch: Watch, others: Sequence[Owner]) -> tuple[list[PosixSighting], list[str]]:
    """The POSIX sightings learn may claim, as for System V (_by_whose): made during the watch
    in the unit's hands alone, or of a user of the unit's processes and held by no live
    process outside it; and not another owner's, and nameable in a policy."""
    users = {p.uid for p in watch.processes.values()}
    ours: list[PosixSighting] = []
    notes: list[str] = []
    for s in watch.posix:
        made = any(what == APPEARED for what, _ in s.evidence)
        label = posix_label(s.obj)
        holder = _name_claimed_by(s.obj, others)
        why = claimable(s.obj.name)
        if holder is not None:
            notes.append(f"{label}: owner {holder.name!r} ({holder.source}) already claims it")
        elif why is not None:
            notes.append(f"{label}: {why}: claim it by hand")
        elif s.others and not made:
            notes.append(
                f"{label}: {_held_text(s.others, watch.unit)} too: held by a live process "
                f"outside {watch.unit} and not made by it, so its hook could remove it under "
                "that process; claim it by hand if it is this unit's"
            )
        elif not made and s.obj.uid not in users:
            notes.append(
                f"{label} (uid {s.obj.uid}): not a user of the unit's processes, and it was "
                "there before the watch: another service's object they only use? claim it by "
                "hand if it is this unit's"
            )
        else:
            ours.append(s)
    return ours, notes


def propose_posix(
    watch: Watch, others: Sequence[Owner]
) -> tuple[list[NameEntry], int | None, list[str]]:
    """The names entries for the unit's POSIX objects (one uid: the most common), that uid,
    and notes on what is left out."""
    ours, notes = _posix_ours(watch, others)
    if not ours:
        return [], None, notes
    uids = Counter(s.obj.uid for s in ours)
    uid = min(uids, key=lambda u: (-uids[u], u))
    for s in ours:
        if s.obj.uid != uid:
            notes.append(
                f"{posix_label(s.obj)} (uid {s.obj.uid}): one owner claims names of one uid "
                f"(uid {uid} here); add another owner for this one by hand"
            )
    ours = [s for s in ours if s.obj.uid == uid]
    mine = {s.obj.identity for s in ours}
    foreign = []
    for obj in watch.posix_present:
        if obj.identity in mine:
            continue
        holder = _name_claimed_by(obj, others)
        held = watch.posix_outside.get(obj.identity, ())
        why = (
            f"held by {_held_text(held, watch.unit)}"
            if held
            else f"claimed by owner {holder.name!r} ({holder.source})"
            if holder
            else ""
        )
        foreign.append(Foreign(obj, why))
    proposed, name_notes = propose_names([s.obj for s in ours], foreign, uid, others)
    by_name = {s.obj.name: s for s in ours}
    entries = [NameEntry(p, tuple(by_name[n] for n in p.names)) for p in proposed]
    return entries, uid, notes + name_notes


def _with_names(
    tables: list[Table], name: str, unit: str, names: Sequence[NameEntry], uid: int | None
) -> list[Table]:
    """The names join the table of the same uid (PostgreSQL: its segment and its DSM files
    in one owner), else a table of their own: NAME, or NAME-posix beside others."""
    kinds = frozenset(s.obj.kind for e in names for s in e.sightings)
    for i, t in enumerate(tables):
        if t.uid == uid and t.cuid is None:
            joined = t._replace(names=tuple(names), posix_kinds=kinds)
            return [*tables[:i], joined, *tables[i + 1 :]]
    own = Table(f"{name}-posix" if tables else name, unit, frozenset(), uid=uid,
                names=tuple(names), posix_kinds=kinds)  # fmt: skip
    return [*tables, own]


def _claim_private(
    private: Sequence[Sighting], others: Sequence[Owner]
) -> tuple[list[Sighting], tuple[int, int] | None, list[str]]:
    """The private objects claimed, their (uid, cuid), and notes on the rest.

    One (uid, cuid) per table: the most common one is proposed, unless another owner claims
    that uid's private objects already."""
    left_out: list[str] = []
    combos = Counter((s.obj.uid, s.obj.cuid) for s in private)
    combo = min(combos, key=lambda c: (-combos[c], c)) if combos else None
    claimed: list[Sighting] = []
    for s in private:
        if (s.obj.uid, s.obj.cuid) == combo:
            claimed.append(s)
        else:
            left_out.append(
                f"{_label(s.obj)} (uid {s.obj.uid}, cuid {s.obj.cuid}): one owner claims "
                "IPC_PRIVATE objects of one uid; add another owner for this one by hand"
            )
    if combo is None:
        return claimed, None, left_out
    holder = _private_claimed_by(combo[0], frozenset(s.obj.kind for s in claimed), others)
    if holder is None:
        return claimed, combo, left_out
    left_out += [
        f"{_label(s.obj)}: owner {holder.name!r} ({holder.source}) already claims "
        f"IPC_PRIVATE objects of uid {combo[0]}"
        for s in claimed
    ]
    return [], None, left_out


def _tables(
    name: str,
    unit: str,
    *,
    ftok: Sequence[FtokEntry],
    keys: Sequence[KeyEntry],
    private: Sequence[Sighting],
    private_combo: tuple[int, int] | None,
    others: Sequence[Owner],
) -> list[Table]:
    """One table when the keyed and private objects share a uid (and no other owner claims
    any of it), else one for each: NAME and NAME-private."""
    claimed_keyed = [s for e in ftok for s in e.sightings] + [s for e in keys for s in e.sightings]
    keyed_combos = {(s.obj.uid, s.obj.cuid) for s in claimed_keyed}
    keyed_combo = next(iter(keyed_combos)) if len(keyed_combos) == 1 else None
    one = _table(name, unit=unit, ftok=ftok, keys=keys, combo=keyed_combo, private=private)
    if claimed_keyed and (
        not private or (keyed_combo == private_combo and _unclaimed(one, others))
    ):
        return [one]
    tables: list[Table] = []
    if claimed_keyed:
        tables.append(one._replace(private=(), kinds=frozenset(s.obj.kind for s in claimed_keyed)))
    if private:
        private_name = f"{name}-private" if claimed_keyed else name
        tables.append(_table(private_name, unit=unit, ftok=(), keys=(), combo=private_combo,
                             private=private))  # fmt: skip
    return tables


def _private_now(watch: Watch, claimed: Sequence[Sighting], combo: tuple[int, int]) -> list[str]:
    """Private objects present but not seen used that the private claim covers too."""
    seen = {(s.obj.kind, s.obj.id) for s in claimed}
    kinds = frozenset(s.obj.kind for s in claimed)
    return [
        f"{_label(obj)} was not seen used by {watch.unit}, but the private claim "
        f"covers it too (uid {obj.uid}, cuid {obj.cuid})"
        for obj in watch.private_now
        if (obj.kind, obj.id) not in seen and obj.kind in kinds and (obj.uid, obj.cuid) == combo
    ]


def _table(
    name: str,
    *,
    unit: str,
    ftok: Sequence[FtokEntry],
    keys: Sequence[KeyEntry],
    combo: tuple[int, int] | None,
    private: Sequence[Sighting],
) -> Table:
    sightings = [s for e in ftok for s in e.sightings] + [s for e in keys for s in e.sightings]
    kinds = frozenset(s.obj.kind for s in [*sightings, *private])
    uid, cuid = combo if combo is not None else (None, None)
    return Table(
        name, unit, kinds, tuple(ftok), tuple(keys), uid,
        cuid if cuid != uid else None, tuple(private),
    )  # fmt: skip


def _unclaimed(table: Table, others: Sequence[Owner]) -> bool:
    """No other owner claims any key of the table, or its private uid, for its kinds."""
    spans = [(e.low, e.high) for e in table.keys] + [(k, k) for k in _ftok_keys(table)]
    if any(_claimed_by(lo, hi, table.kinds, others) for lo, hi in spans):
        return False
    return not (
        table.private
        and table.uid is not None
        and _private_claimed_by(table.uid, table.kinds, others)
    )


def _ftok_keys(table: Table) -> set[Key]:
    return {s.obj.key for f in table.ftok for s in f.sightings}


def _by_key(sightings: Iterable[Sighting]) -> dict[Key, list[Sighting]]:
    by_key: dict[Key, list[Sighting]] = {}
    for s in sightings:
        by_key.setdefault(s.obj.key, []).append(s)
    return by_key


def _drop_claimed(
    keyed: Sequence[Sighting], others: Sequence[Owner]
) -> tuple[list[Sighting], list[str]]:
    """The keyed sightings no other owner claims, and a note for each key left out.

    The table's kinds apply to every key in it, so a key another owner claims for any kind
    the table would hold is left out; that can shrink the kinds, so repeat until stable.
    """
    left_out: dict[Key, str] = {}
    live = list(keyed)
    while True:
        kinds = frozenset(s.obj.kind for s in live)
        by_key = _by_key(live)
        for key in sorted(by_key):
            holder = _claimed_by(key, key, kinds, others)
            if holder is not None:
                shared = sorted(k.value for k in holder.kinds & kinds)
                left_out[key] = (
                    f"key 0x{key:08x} ({', '.join(_label(s.obj) for s in by_key[key])}): "
                    f"owner {holder.name!r} ({holder.source}) already claims it for "
                    f"{'/'.join(shared)}"
                )
        still = [s for s in live if s.obj.key not in left_out]
        stable = frozenset(s.obj.kind for s in still) == kinds
        live = still
        if stable:
            return live, [left_out[k] for k in sorted(left_out)]


def _claim_keys(
    keyed: Sequence[Sighting],
    candidates: Sequence[Candidate],
    others: Sequence[Owner],
    blockers: frozenset[Key] = frozenset(),
) -> tuple[list[FtokEntry], list[KeyEntry], list[str]]:
    """Split keyed sightings into ftok entries and key entries, leaving out claimed keys; no
    range spans a key another owner claims or one of `blockers` (seen, not claimed)."""
    live, left_out = _drop_claimed(keyed, others)
    by_key = _by_key(live)
    ftok_at: dict[tuple[str, int], FtokEntry] = {}
    plain: list[Key] = []
    for key in sorted(by_key):
        matches = ftok_matches(key, candidates)
        if not matches:
            plain.append(key)
            continue
        best, proj = matches[0]
        alternatives = tuple(sorted({c.path for c, _ in matches[1:]} - {best.path}))
        entry = ftok_at.get((best.path, proj))
        sightings = (*entry.sightings, *by_key[key]) if entry else tuple(by_key[key])
        ftok_at[(best.path, proj)] = FtokEntry(best.path, proj, best.how, sightings, alternatives)
    kinds = frozenset(s.obj.kind for s in live)
    ordered = sorted(blockers)

    def crosses(low: Key, high: Key) -> bool:
        """Whether a range from key low to key high would claim what is not the unit's."""
        inner = bisect.bisect_right(ordered, low) < bisect.bisect_left(ordered, high)
        return inner or (
            high - low > 1 and _claimed_by(low + 1, high - 1, kinds, others) is not None
        )

    key_entries = [
        KeyEntry(lo, hi, tuple(s for k in run if lo <= k <= hi for s in by_key[k]))
        for run in _runs(plain, crosses)
        for lo, hi in summarise_keys(run)
    ]
    ftok_entries = sorted(ftok_at.values(), key=lambda e: (e.path, e.proj))
    return ftok_entries, key_entries, left_out


def _runs(keys: Sequence[Key], crosses: Callable[[Key, Key], bool]) -> list[list[Key]]:
    """Sorted keys cut wherever the gap to the next one holds something not to claim."""
    runs: list[list[Key]] = []
    for key in keys:
        if runs and not crosses(runs[-1][-1], key):
            runs[-1].append(key)
        else:
            runs.append([key])
    return runs


def _prefix_hints(entries: Sequence[KeyEntry], blockers: frozenset[Key]) -> list[str]:
    """Blocks the scattered singles may come from, unless an object seen and not claimed has
    a key there: then the block is not the unit's alone, and no hint invites claiming it."""
    singles = Counter(e.low >> 16 for e in entries if e.low == e.high)
    taken = {k >> 16 for k in blockers}
    return [
        f"{n} single keys share the prefix 0x{p:04x}: if the service derives keys from a "
        f'pid or a counter, the block "0x{p:04x}0000-0x{p:04x}ffff" may be its own'
        for p, n in sorted(singles.items())
        if n >= PREFIX_HINT and p not in taken
    ]


# -- TOML ------------------------------------------------------------------------------------

_BARE_PROJ = re.compile(r"[A-Za-z0-9]")


def toml_string(text: str) -> str:
    """A TOML basic string holding exactly `text` (which must hold no lone surrogate), with
    every character escape.py's rule names escaped (\\uNNNN): the TOML is printed, and
    a bidi control or C1 control in a path would make it read otherwise than it parses."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif must_escape(ch):
            o = ord(ch)
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def comment_text(text: str, width: int | None = None) -> str:
    """Text safe inside a TOML comment: escaped by escape.py's rule, so nothing a
    process controls can end the comment or hide what follows."""
    safe = safe_name(text)
    if width is not None and len(safe) > width:
        safe = safe[: width - 3] + "..."
    return safe


def _label(obj: IpcObject) -> str:
    return f"{obj.kind.value} id {obj.id}"


def pid_list(pids: Iterable[Pid]) -> str:
    """Sorted pids with runs folded: 117, 123-132."""
    out: list[str] = []
    ordered = sorted(set(pids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ", ".join(out)


def describe_sighting(s: Sighting, watch: Watch) -> list[str]:
    """The object, then one line per way it was seen (pids, how often), then the commands,
    then the processes outside the unit that used it too; every line safe in a comment."""
    lines = [f"{_label(s.obj)} (key 0x{s.obj.key:08x}), in {s.samples} of {watch.samples} samples:"]
    return lines + _evidence_lines(s.evidence, s.others, watch)


def describe_posix(s: PosixSighting, watch: Watch) -> list[str]:
    """describe_sighting for a POSIX object: its kind and name (escaped), uid and size."""
    lines = [
        f"{comment_text(posix_label(s.obj))} (uid {s.obj.uid}, {s.obj.size} bytes), "
        f"in {s.samples} of {watch.samples} samples:"
    ]
    return lines + _evidence_lines(s.evidence, s.others, watch)


def _evidence_lines(
    evidence: Mapping[tuple[str, Pid], int], others: Sequence[Claimant], watch: Watch
) -> list[str]:
    lines: list[str] = []
    groups: dict[str, list[tuple[Pid, int]]] = {}
    for (what, pid), n in sorted(evidence.items(), key=lambda e: (e[0][0], -e[1], e[0][1])):
        groups.setdefault(what, []).append((pid, n))
    shown_pids: set[Pid] = set()
    for what, counts in groups.items():
        if counts[0][0] == 0:  # not bound to a pid
            lines.append(f"  {what} ({counts[0][1]})")
            continue
        shown = counts[:_MAX_PIDS_LISTED]
        shown_pids.update(p for p, _ in shown)
        more = f" +{len(counts) - len(shown)} more" if len(counts) > len(shown) else ""
        lines.append(f"  {what}: pid {', '.join(f'{p} ({n})' for p, n in shown)}{more}")
    by_command: dict[str, list[Pid]] = {}
    for pid in shown_pids:
        proc = watch.processes.get(pid)
        if proc is not None:
            by_command.setdefault(proc.command, []).append(pid)
    for command, pids in sorted(by_command.items(), key=lambda c: min(c[1])):
        lines.append(f"  pid {pid_list(pids)}: {comment_text(command, _COMMAND_WIDTH)}")
    # outside the unit: the object was claimed anyway because a unit process made it
    lines += [
        f"  also {comment_text(claimant_text(c, watch.unit))}" for c in others[:_MAX_CLAIMANTS]
    ]
    if len(others) > _MAX_CLAIMANTS:
        lines.append(f"  also {len(others) - _MAX_CLAIMANTS} more processes outside the unit")
    return lines


def _comments(sightings: Sequence[Sighting], watch: Watch, indent: str) -> list[str]:
    lines = [
        f"{indent}# {line}"  # describe_sighting escaped what a process supplied
        for s in sightings[:_MAX_OBJECTS_LISTED]
        for line in describe_sighting(s, watch)
    ]
    if len(sightings) > _MAX_OBJECTS_LISTED:
        lines.append(f"{indent}# ... and {len(sightings) - _MAX_OBJECTS_LISTED} more objects")
    return lines


def _proj(proj: int) -> str:
    return toml_string(chr(proj)) if _BARE_PROJ.fullmatch(chr(proj)) else str(proj)


def _key_spec(e: KeyEntry) -> str:
    return f'"0x{e.low:08x}"' if e.low == e.high else f'"0x{e.low:08x}-0x{e.high:08x}"'


def _uid_value(uid: int, user_name: Callable[[int], str | None]) -> tuple[str, str]:
    """The value to write (a user name where there is one) and what it stands for."""
    name = user_name(uid)
    if name is None or name.isdigit() or any(must_escape(c) for c in name):
        return str(uid), ""
    return toml_string(name), f"uid {uid}"


def render(proposal: Proposal, watch: Watch, user_name: Callable[[int], str | None]) -> str:
    """The proposal as TOML for /etc/ipcjanitor/policy.d/, every entry with what was seen."""
    unit = comment_text(watch.unit)
    lines = [
        f"# Proposed by `ipcjanitor learn {unit}`: {watch.seconds:.0f} s watched, "
        f"{watch.samples} samples, {len(watch.processes)} processes seen.",
        "# Each entry says what was seen: which object, which pid and command, in how many",
        "# samples. Review it before use: `ipcjanitor policy check FILE`.",
    ]
    for note in proposal.left_out:
        lines.append(f"# NOT CLAIMED: {comment_text(note)}")
    for hint in proposal.hints:
        lines.append(f"# HINT: {comment_text(hint)}")
    for t in proposal.tables:
        lines += ["", f"[owners.{_toml_key(t.name)}]", f"unit = {toml_string(t.unit)}"]
        lines.append(_kinds_line(t))
        lines += _ftok_lines(t, watch) + _keys_lines(t, watch)
        if t.private:
            lines.append("# IPC_PRIVATE (key 0) objects of this uid (and creator uid):")
            lines += _comments(t.private, watch, "")
            lines.append("private = true")
        if t.names:
            lines += _names_lines(t.names, watch)
        lines += _uid_lines(t, user_name)
        lines += [
            f"# min_age 0s: while {unit} has any process, every object above is kept (in-use)",
            "# whatever its idle time, so a grace time protects nothing then; after the unit",
            "# stops, the hook must clean at once (the default 10m would keep a just-killed",
            "# service's objects as young).",
            'min_age = "0s"',
        ]
    return "\n".join(lines) + "\n"


def _ftok_lines(t: Table, watch: Watch) -> list[str]:
    """The table's ftok = [...] entries, each with what was seen of it."""
    out: list[str] = []
    if t.ftok:
        out.append("ftok = [")
        for f in t.ftok:
            out.append(f"    # key = ftok(path, {comment_text(repr(chr(f.proj)))}): the "
                         f"file is {comment_text(f.how)}")  # fmt: skip
            if f.others:
                shown = ", ".join(comment_text(p) for p in f.others[:_MAX_PIDS_LISTED])
                out.append(f"    # (these files give the same key too: {shown})")
            out += _comments(f.sightings, watch, "    ")
            path = toml_string(f.path.replace("%", "%%"))  # %i is the instance specifier
            out.append(f"    {{ path = {path}, proj = {_proj(f.proj)} }},")
        out.append("]")
    return out


def _keys_lines(t: Table, watch: Watch) -> list[str]:
    """The table's keys = [...] entries, each with what was seen of it."""
    out: list[str] = []
    if t.keys:
        out.append("keys = [")
        for e in t.keys:
            if e.low != e.high:
                seen = len({s.obj.key for s in e.sightings})
                out.append(f"    # {seen} of the {e.high - e.low + 1} keys of this range were seen")
            out += _comments(e.sightings, watch, "    ")
            out.append(f"    {_key_spec(e)},")
        out.append("]")
    return out


def _uid_lines(t: Table, user_name: Callable[[int], str | None]) -> list[str]:
    """The table's uid (and cuid) lines, a user name where there is one."""
    out: list[str] = []
    if t.uid is not None:
        value, note = _uid_value(t.uid, user_name)
        out.append(f"uid = {value}  # the objects' owner ({note or 'ipcs OWNER'})")
        if t.cuid is not None:
            value, note = _uid_value(t.cuid, user_name)
            out.append(f"cuid = {value}  # their creator ({note or 'ipcs CUID'})")
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    """A table name as a TOML key: bare where TOML allows, else quoted (worker@2, a.b)."""
    return name if _BARE_KEY.fullmatch(name) else toml_string(name)


def _kinds_line(t: Table) -> str:
    kinds = [k.value for k in IpcKind if k in t.kinds]
    kinds += [k.value for k in PosixKind if k in t.posix_kinds]
    return "kinds = [" + ", ".join(f'"{k}"' for k in kinds) + "]"


def _names_lines(entries: Sequence[NameEntry], watch: Watch) -> list[str]:
    """names = [...], each entry after what was seen of the names it stands for."""
    lines = ["names = ["]
    for e in entries:
        p = e.proposed
        if not p.exact:
            lines.append(
                f"    # a pattern: {len(p.names)} name(s) seen, the part that differs or "
                "looks generated (digits, hex) as *"
            )
            if p.also:
                shown = ", ".join(comment_text(n) for n in p.also[:_MAX_PIDS_LISTED])
                more = f" +{len(p.also) - _MAX_PIDS_LISTED} more" if len(p.also) > 3 else ""
                lines.append(f"    # it covers these too, held by no process seen: {shown}{more}")
        lines += [
            f"    # {line}"
            for s in e.sightings[:_MAX_OBJECTS_LISTED]
            for line in describe_posix(s, watch)
        ]
        if len(e.sightings) > _MAX_OBJECTS_LISTED:
            lines.append(f"    # ... and {len(e.sightings) - _MAX_OBJECTS_LISTED} more names")
        lines.append(f"    {toml_string(p.pattern)},")
    lines.append("]")
    return lines

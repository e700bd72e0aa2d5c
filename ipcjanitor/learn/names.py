"""PURE: the `names = [...]` learn proposes for the POSIX objects a unit was seen using.

A name is proposed exactly when it is stable. Where names hold a generated part — a run of
3 or more digits (a pid, a counter, PostgreSQL's random DSM handle), a run of 6 or more hex
digits with a digit among them (Python's `psm_` + token_hex, vLLM's buffers), or digits
that differ between names otherwise alike (`jack_sem.0`, `jack_sem.1`) — that part becomes
`*`: `PostgreSQL.*`, `psm_*`, `vllm_offload_*.mmap`. A pattern needs a literal head of 3
characters or more before its first `*` (else it is too wide: the names are listed one by
one), and it is never proposed where it would match an object seen on the host that is not
the unit's: one held by a live process outside the unit, or one an existing owner claims;
nor where it can match a name an existing owner's pattern matches (names.common_name decides
it). Then the names seen are proposed exactly, and the reason is a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from ..escape import must_escape
from ..model import PosixKind, PosixObject
from ..policy.model import Owner
from ..policy.names import common_name, problem, to_regex

MIN_HEAD = 3  # literal characters before a pattern's first '*'
_DIGITS = 3  # a run of this many digits is generated
_HEX = 6  # a hex run this long, with a digit in it, is generated
_TOKEN = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")
_HEX_RUN = re.compile(r"[0-9a-fA-F]+")
_TRAILING_DIGITS = re.compile(rf"^(.*?[A-Za-z])([0-9]{{{_DIGITS},}})$")
_GLOB = {"*": "[*]", "?": "[?]", "[": "[[]"}
STAR = "\0"  # a generated part in a shape (no name holds NUL)


class Foreign(NamedTuple):
    """An object seen on the host that is not the unit's, and why it is another's."""

    obj: PosixObject
    why: str  # "held by pid 90 (other) of other.service", "claimed by owner 'x' (...)", ""


class Proposed(NamedTuple):
    """One entry of `names`: its pattern (or exact name), the names seen it covers, and the
    names present it covers too though the unit was not seen using them."""

    pattern: str
    names: tuple[str, ...]
    also: tuple[str, ...] = ()
    exact: bool = True


def _generated(token: str) -> list[str]:
    """An alphanumeric token as its parts: literal text, or STAR for a generated part."""
    if token.isdigit() and len(token) >= _DIGITS:
        return [STAR]
    if len(token) >= _HEX and _HEX_RUN.fullmatch(token) and any(c.isdigit() for c in token):
        return [STAR]
    m = _TRAILING_DIGITS.match(token)
    if m:
        return [m.group(1), STAR]
    return [token]


def shape(name: str) -> tuple[str, ...]:
    """The name cut into literal parts and STARs (generated parts), separators kept."""
    out: list[str] = []
    for token in _TOKEN.findall(name):
        parts = _generated(token) if token[0].isalnum() else [token]
        for part in parts:
            if part == STAR and out and out[-1] == STAR:
                continue
            out.append(part)
    return tuple(out)


def _merge_varying_digits(shapes: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Names alike but for short digit parts that differ between them: those parts are
    generated too (jack_sem.0, jack_sem.1 -> jack_sem.*)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, parts in shapes.items():
        key = tuple("#" if p.isdigit() else p for p in parts)
        groups.setdefault(key, []).append(name)
    out = dict(shapes)
    for key, names in groups.items():
        if len(names) < 2 or "#" not in key:
            continue
        columns = [{shapes[n][i] for n in names} for i in range(len(key))]
        merged = tuple(
            STAR if k == "#" and len(col) > 1 else shapes[names[0]][i]
            for i, (k, col) in enumerate(zip(key, columns, strict=True))
        )
        for n in names:
            out[n] = merged
    return out


def _pattern(parts: Sequence[str]) -> str:
    return "".join("*" if p == STAR else "".join(_GLOB.get(c, c) for c in p) for p in parts)


def _head(parts: Sequence[str]) -> int:
    """How many literal characters come before the first STAR."""
    n = 0
    for p in parts:
        if p == STAR:
            break
        n += len(p)
    return n


def claimable(name: str) -> str | None:
    """Why a name cannot be written into `names`, or None."""
    if any(must_escape(c) for c in name):
        return "its name holds control, format or undecodable characters"
    return problem(_pattern([name]), has_uid=True)


def group_names(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Pattern (or exact name, glob characters escaped) -> the names it stands for.

    A pattern is kept only with a literal head of MIN_HEAD characters; otherwise each of its
    names stands for itself."""
    shapes = _merge_varying_digits({n: shape(n) for n in sorted(set(names))})
    out: dict[str, list[str]] = {}
    for name, parts in shapes.items():
        if STAR in parts and _head(parts) >= MIN_HEAD:
            out.setdefault(_pattern(parts), []).append(name)
        else:
            out.setdefault(_pattern([name]), []).append(name)
    # a pattern whose names another pattern matches too joins it (jack_sem.* holds
    # jack_sem.1000_default): one entry per set of names, never two that overlap
    wide = {p: to_regex([p]) for p in out if not _literal(p, out)}
    for p in sorted(out, key=len):
        host = next((q for q, rx in wide.items() if q != p and all(map(rx.match, out[p]))), None)
        if host is not None and p in out and host in out:
            out[host] += out.pop(p)
            wide.pop(p, None)
    return {p: tuple(sorted(ns)) for p, ns in sorted(out.items())}


def _literal(pattern: str, groups: Mapping[str, list[str]]) -> str:
    """The one name a pattern stands for when it is that name, escaped; else ''."""
    names = groups[pattern]
    return names[0] if len(names) == 1 and _pattern([names[0]]) == pattern else ""


def _overlap(pattern: str, kinds: frozenset[PosixKind], uid: int, owners: Iterable[Owner]) -> str:
    """The first existing owner whose patterns can match a name this one matches, as text."""
    for o in owners:
        shared = o.posix_kinds & kinds
        if not shared or (o.uid is not None and o.uid != uid):
            continue
        for theirs in o.names:
            name = common_name(pattern, theirs, slash=PosixKind.SHM in shared)
            if name is not None:
                return (
                    f"owner {o.name!r} ({o.source}) claims names matching {theirs!r}, "
                    f"and both match {name!r}"
                )
    return ""


def propose_names(
    seen: Sequence[PosixObject],
    foreign: Sequence[Foreign],
    uid: int,
    owners: Sequence[Owner] = (),
) -> tuple[list[Proposed], list[str]]:
    """The `names` entries for the unit's objects `seen` (all of the one `uid`), and a note
    for each pattern not proposed and each object it covers that is not the unit's.

    foreign: every other object seen on the host, with why it is another's ("" when nothing
    was seen holding it: left over, e.g. by an earlier run of the unit). owners: the other
    owners of the policy (a name they claim is left out by the caller)."""
    kinds = frozenset(o.kind for o in seen)
    proposed: list[Proposed] = []
    notes: list[str] = []
    for pattern, names in group_names(o.name for o in seen).items():
        if len(names) == 1 and pattern == _pattern([names[0]]):
            proposed.append(Proposed(pattern, names))
            continue
        regex = to_regex([pattern])
        matched = [f for f in foreign if f.obj.kind in kinds and regex.match(f.obj.name)]
        blocking = [f for f in matched if f.obj.uid == uid and f.why]
        clash = _overlap(pattern, kinds, uid, owners)
        if blocking or clash:
            why = clash or (
                f"it would match {blocking[0].obj.kind.value} {blocking[0].obj.name!r}, "
                f"{blocking[0].why}"
            )
            notes.append(
                f"pattern {pattern!r} not proposed: {why}; the names seen are listed one by one"
            )
            proposed += [Proposed(_pattern([n]), (n,)) for n in names]
            continue
        also = tuple(sorted(f.obj.name for f in matched if f.obj.uid == uid))
        notes += [
            f"{f.obj.kind.value} {f.obj.name!r} of uid {f.obj.uid} matches {pattern!r} too: "
            "another user's, so the owner's uid leaves it out (unowned)"
            for f in matched
            if f.obj.uid != uid
        ]
        notes += [
            f"{pattern!r} covers {kind_name(kinds)} {n!r} too: not seen used by the unit, "
            "held by no process seen (left over by an earlier run?)"
            for n in also
        ]
        proposed.append(Proposed(pattern, names, also, exact=False))
    return proposed, notes


def kind_name(kinds: Iterable[PosixKind]) -> str:
    return "/".join(k.value for k in PosixKind if k in kinds)

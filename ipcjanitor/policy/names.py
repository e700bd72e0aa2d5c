"""PURE: the `names = [...]` patterns of POSIX owners — checking, matching, and deciding
whether two patterns can match one name.

A pattern is a shell pattern matched against the whole name: `*` matches any run of
characters but `/`, `?` one character but `/`, `[abc]`, `[a-z]`, `[!abc]` one character of
a set (never `/`); every other character, `\\` included, stands for itself (an unclosed `[`
too). Names are paths below /dev/shm (`app/buf0`), or a semaphore's or queue's NAME.

Whether two patterns can match one name is decided, not sampled: each pattern is a small
automaton over its positions; the characters split into finitely many classes that no
pattern tells apart; a breadth-first search over pairs of positions finds the shortest name
both match, or proves there is none. Whether a pattern matches every name is decided the
same way (a search for one name it misses).
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

MAX_PATTERN = 255  # a name below /dev/shm is at most NAME_MAX per component anyway
_SLASH = ord("/")


class _Tok(NamedTuple):
    """One position of a pattern: a star, or the set of characters it takes (never '/')."""

    star: bool
    ranges: tuple[tuple[int, int], ...] = ()  # inclusive code point ranges
    negated: bool = False
    literal: bool = False  # a plain character of the pattern: the only token taking '/'

    def takes(self, c: int) -> bool:
        if self.literal:
            return c == self.ranges[0][0]
        if c == _SLASH:
            return False
        if self.star:
            return True
        inside = any(lo <= c <= hi for lo, hi in self.ranges)
        return inside != self.negated


_ANY = _Tok(False, (), True)  # '?': anything but '/'


def _tokens(pattern: str) -> tuple[_Tok, ...]:
    out: list[_Tok] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if not (out and out[-1].star):  # '**' is '*'
                out.append(_Tok(True))
            i += 1
        elif c == "?":
            out.append(_ANY)
            i += 1
        elif c == "[":
            parsed = _bracket(pattern, i + 1)
            if parsed is None:  # unclosed: a literal '['
                out.append(_Tok(False, ((ord(c), ord(c)),), literal=True))
                i += 1
            else:
                tok, i = parsed
                out.append(tok)
        else:
            out.append(_Tok(False, ((ord(c), ord(c)),), literal=True))
            i += 1
    return tuple(out)


def _bracket(pattern: str, i: int) -> tuple[_Tok, int] | None:
    """A bracket expression starting after '[' at i: its token and the index after ']'."""
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            return _Tok(False, tuple(ranges), negated), i + 1
        first = False
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            lo, hi = ord(c), ord(pattern[i + 2])
            if lo <= hi:  # a reversed range matches nothing, as in fnmatch
                ranges.append((lo, hi))
            i += 3
        else:
            ranges.append((ord(c), ord(c)))
            i += 1
    return None


def problem(pattern: object, *, has_uid: bool) -> str | None:
    """Why a pattern is refused, or None: what the contract refuses, with what to write."""
    if not isinstance(pattern, str):
        return 'a pattern is a string, e.g. "psm_*"'
    if not pattern:
        return "an empty pattern matches nothing a service names: remove it"
    if len(pattern) > MAX_PATTERN:
        return f"a pattern longer than {MAX_PATTERN} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
        return f"{pattern!r} holds a NUL or control character"
    if pattern.startswith("/"):
        return (
            f"{pattern!r} is absolute: write the name below /dev/shm or as sem_open/mq_open "
            f"take it without the slash ({pattern.lstrip('/')!r})"
        )
    parts = pattern.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return (
            f"{pattern!r} has an empty, '.' or '..' component: names are plain paths below /dev/shm"
        )
    if not has_uid and matches_everything(pattern):
        return (
            f"{pattern!r} matches every name: it would claim every object of every user; "
            'narrow it (e.g. "psm_*") or add uid = "USER"'
        )
    return None


def to_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex matching a whole name exactly when one of the patterns does."""
    alternatives = []
    for pattern in patterns:
        parts = []
        for tok in _tokens(pattern):
            if tok.star:
                parts.append("[^/]*")
            elif not tok.literal:
                body = "".join(
                    re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
                    for lo, hi in tok.ranges
                )
                parts.append(f"[^/{body}]" if tok.negated else f"(?!/)[{body}]" if body else "(?!)")
            else:
                parts.append(re.escape(chr(tok.ranges[0][0])))
        alternatives.append("".join(parts))
    return re.compile("(?:" + "|".join(alternatives) + r")\Z", re.DOTALL)


def _alphabet(toks: Iterable[tuple[_Tok, ...]], slash: bool) -> list[int]:
    """One representative character of each class of characters no pattern tells apart
    (NUL excluded: no name holds it; '/' only where names may hold it)."""
    points = {1, 0x110000, _SLASH, _SLASH + 1}
    for pattern in toks:
        for tok in pattern:
            for lo, hi in tok.ranges:
                points.update((lo, hi + 1))
    edges = sorted(p for p in points if 1 <= p <= 0x110000)
    reps = []
    for lo, hi in itertools.pairwise(edges):  # the class [lo, hi)
        if lo == _SLASH and not slash:
            continue
        printable = max(lo, 0x21)
        reps.append(printable if printable < min(hi, 0x7F) or lo >= 0x7F else lo)
    return reps


def _closure(toks: Sequence[_Tok], i: int) -> list[int]:
    """The positions reached from i without reading: past each star."""
    out = [i]
    while i < len(toks) and toks[i].star:
        i += 1
        out.append(i)
    return out


def _step(toks: Sequence[_Tok], positions: Iterable[int], c: int) -> frozenset[int]:
    nxt: set[int] = set()
    for i in positions:
        if i < len(toks) and toks[i].takes(c):
            nxt.update(_closure(toks, i if toks[i].star else i + 1))
    return frozenset(nxt)


def common_name(a: str, b: str, *, slash: bool = True) -> str | None:
    """The shortest non-empty name both patterns match, or None when no name can match both.

    slash: names may hold '/' (posix-shm); a semaphore's or queue's name never does.
    """
    ta, tb = _tokens(a), _tokens(b)
    alphabet = _alphabet((ta, tb), slash)
    start = (frozenset(_closure(ta, 0)), frozenset(_closure(tb, 0)))
    seen = {start}
    queue: deque[tuple[tuple[frozenset[int], frozenset[int]], str]] = deque([(start, "")])
    while queue:
        (pa, pb), name = queue.popleft()
        for c in alphabet:
            na, nb = _step(ta, pa, c), _step(tb, pb, c)
            if not na or not nb:
                continue
            longer = name + chr(c)
            if len(ta) in na and len(tb) in nb:
                return longer
            if (na, nb) not in seen:
                seen.add((na, nb))
                queue.append(((na, nb), longer))
    return None


def matches_everything(pattern: str) -> bool:
    """Whether the pattern matches every non-empty name without '/' (a search for one it
    misses, over sets of positions)."""
    toks = _tokens(pattern)
    alphabet = [c for c in _alphabet((toks,), slash=False) if c != _SLASH]
    start = frozenset(_closure(toks, 0))
    seen = {start}
    queue = deque([start])
    while queue:
        positions = queue.popleft()
        for c in alphabet:
            nxt = _step(toks, positions, c)
            if len(toks) not in nxt:
                return False  # this name (or a longer one through it) is missed
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return True

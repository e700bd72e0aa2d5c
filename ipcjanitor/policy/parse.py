"""One policy file's TOML text -> validated Owners, or every problem with its line."""

from __future__ import annotations

import itertools
import os
import pwd
import re
import tomllib  # Python >= 3.11, which pystemd requires too: the tomli fallback never applies
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .. import chase
from ..errors import PolicyErrors, PolicyProblem
from ..model import IpcKind, PosixKind
from ..unitnames import template_parts
from . import names as name_patterns
from .model import Owner
from .timespan import USEC_INFINITY, USEC_PER_SEC, format_timespan, parse_timespan

_TOP_FIELDS = {"min_age", "pid_namespace_complete", "owners"}
_OWNER_FIELDS = {
    "unit",
    "keys",
    "ftok",
    "kinds",
    "uid",
    "cuid",
    "private",
    "min_age",
    "keep_queued_messages",
    "names",
}
_OWNER_UNITS = (".service", ".scope")  # only these have processes of their own
_PROCESSLESS_UNITS = (
    ".socket",
    ".timer",
    ".slice",
    ".target",
    ".mount",
    ".path",
    ".swap",
    ".device",
    ".automount",
)
_DURATION_HINT = (
    'a duration is a number of seconds or a systemd time span like "90s", "10min", '
    '"1h 30min", "500ms", "2d" (systemd.time(7))'
)
_KEY = re.compile(r"0x[0-9a-f]+|[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
UID_MAX = 2**32 - 2  # (uid_t)-1 means "no uid" to the kernel
# A policy nests two deep (ftok = [{ ... }], [[ ]]); tomllib recurses about 500 deep and
# then raises RecursionError. Beyond this, refuse before parsing.
MAX_NESTING = 8
_NESTING_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?"""'  # multi-line basic string
    r"|'''.*?'''"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[\]{}]",
    re.DOTALL,
)
_OWNER_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")
_SPECIFIER = re.compile(r"(%.?)", re.DOTALL)


class ParsedFile(NamedTuple):
    """What one policy file says: its owners by name, and the top-level settings it sets."""

    owners: dict[str, Owner]
    min_age: float | None
    warnings: list[str]
    pid_namespace_complete: bool | None
    lines: dict[str, int | None]  # where each top-level setting it sets is


def ftok(path: str | os.PathLike[str], proj: int) -> int:
    """The key ftok(3) and PHP's ftok() compute: proj, st_dev and st_ino bits, unsigned."""
    return _key(os.stat(path), proj)


def _key(st: os.stat_result, proj: int) -> int:
    return ((proj & 0xFF) << 24) | ((st.st_dev & 0xFF) << 16) | (st.st_ino & 0xFFFF)


def ftok_claim(path: str, proj: int, uid: int | None, strict: bool) -> tuple[int, bool]:
    """The key an owner may claim by ftok(path, proj), and whether a non-root user could
    steer it (the owner's uid controls the path); raises Skipped when it may not be claimed.

    As root (strict), whoever can change what the path resolves to chooses the key root
    claims — a user who owns a directory on the way could point it at another user's live
    objects. The key is claimed only when root alone controls the path, or the one user who
    does is the owner's uid: then only objects that user owns (and could remove) are claimed.
    """
    if not strict:
        return _ftok_key(path, proj), False
    try:
        st, uids, anyone = chase.stat_controlled(path)
    except chase.Refused as exc:
        raise Skipped(f"ftok path {path} cannot be read ({exc.problem})") from None
    if anyone:
        raise Skipped(
            f"ftok path {path}: {anyone}, so any user could choose the key it gives (make it "
            "root's and chmod go-w, or claim the key with keys = [...])"
        )
    others = sorted(uids - {uid}) if uid is not None else sorted(uids)
    if others:
        who = ", ".join(str(u) for u in others)
        raise Skipped(
            f"ftok path {path} can be replaced by uid {who} (owner of a directory on the "
            "way): root would claim whatever key that user chose, another user's objects "
            f"included; set uid = {others[0]} on this owner if its objects are that user's "
            "(it then claims only objects that user owns), or make the directories root's"
        )
    return _key(st, proj), bool(uids)


def parse_duration(value: object) -> float:
    """Seconds in a systemd.time(7) span ("90s", "10min", "1h 30min", "500ms") or an integer.

    Parsed as systemd's parse_sec() parses it (timespan.py), with two refusals of our own:
    "infinity" (a grace time without end removes nothing, a watch without end never writes
    its proposal), and terms out of order ("10s5m": systemd reads 5min 10s, but a policy
    that says it so is more likely a typo of "10min 5s" than meant).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(_DURATION_HINT)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    units: list[int] = []
    try:
        usec = parse_timespan(value, units)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a duration ({exc}): {_DURATION_HINT}") from None
    if usec == USEC_INFINITY:
        raise ValueError(f"{value!r}: a duration must end; {_DURATION_HINT}")
    if any(a <= b for a, b in itertools.pairwise(units)):
        raise ValueError(
            f"{value!r}: write its terms largest first, each unit once "
            f"(systemd reads it as {format_timespan(usec)!r})"
        )
    return usec / USEC_PER_SEC


def parse_key(text: str) -> int:
    t = text.strip().lower()
    if not _KEY.fullmatch(t):
        raise ValueError(f"{text!r} is not a key")
    value = int(t, 16) if t.startswith("0x") else int(t, 10)
    if value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"key {text} is outside 0..0xffffffff (keys are 32 bits)")
    return value


def parse_key_spec(spec: object) -> tuple[int, int]:
    """ "0x61040000-0x6104ffff", "0x62000001", "1000" or 1000 -> inclusive (low, high)."""
    if isinstance(spec, bool):
        raise ValueError('a key is a number or a string like "0x61040000"')
    if isinstance(spec, int):
        if not 0 <= spec <= 0xFFFFFFFF:
            raise ValueError(f"key {spec} is outside 0..0xffffffff (keys are 32 bits)")
        low = high = spec
    elif isinstance(spec, str):
        ends = spec.split("-")
        if len(ends) > 2 or not all(e.strip() for e in ends):
            raise ValueError(f"{spec!r} is neither a key nor a range LOW-HIGH")
        try:
            low, high = parse_key(ends[0]), parse_key(ends[-1])
        except ValueError as exc:
            if "outside" in str(exc):
                raise
            raise ValueError(f"{spec!r} is not a key: use hex (0x6104e88b) or decimal") from None
        if low > high:
            raise ValueError(f"range {spec!r} is reversed: write it low-high")
    else:
        raise ValueError('a key is a number or a string like "0x61040000"')
    if low == 0:
        raise ValueError(
            "key 0 is IPC_PRIVATE and cannot be claimed by key: set private = true and uid"
        )
    return low, high


def resolve_uid(value: object) -> int:
    """A user name, or a number (also as a string of ASCII digits) in 0..2^32-2."""
    if isinstance(value, bool):
        raise ValueError("uid is a user name or a number")
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value <= UID_MAX:
            raise ValueError(f"uid {value} is outside 0..{UID_MAX}")
        return value
    if isinstance(value, str):
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            raise ValueError(f"no user named {value!r} on this host") from None
    raise ValueError("uid is a user name or a number")


class _LineFinder:
    """Best-effort source lines for semantic errors: TOML parsers keep no positions.

    The text is split by table header once: a table's header line is a lookup, and a key is
    looked for only among its own table's lines, so finding every owner's line is linear in
    the file (a scan of the whole file per owner made 8,000 owners take 97 s: issue 16.9).
    """

    _HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self._headers: dict[str, int] = {}  # table -> the line of its first header
        self._bodies: dict[str | None, list[tuple[int, str]]] = {None: []}  # None: top level
        body = self._bodies[None]
        for no, line in enumerate(text.splitlines(), start=1):
            m = self._HEADER.match(line)
            if m:
                table = re.sub(r"\s*\.\s*", ".", m.group(1)).replace('"', "").replace("'", "")
                self._headers.setdefault(table, no)
                body = self._bodies.setdefault(table, [])
            else:
                body.append((no, line))

    def find(self, table: str | None, key: str | None = None) -> int | None:
        if key is None:
            return self._headers.get(table) if table is not None else None
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        return next((no for no, line in self._bodies.get(table, ()) if pattern.match(line)), None)


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list, e.g. {what}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _keys(value: object) -> list[tuple[int, int]]:
    return [parse_key_spec(spec) for spec in _list(value, 'keys = ["0x61040000-0x6104ffff"]')]


_KINDS: dict[str, IpcKind | PosixKind] = {k.value: k for k in (*IpcKind, *PosixKind)}


def _kinds(value: object) -> frozenset[IpcKind | PosixKind]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(k, str) and k in _KINDS for k in value)
    ):
        raise ValueError(
            'must be a non-empty list of "shm", "sem", "msg", "posix-shm", "posix-sem", "posix-mq"'
        )
    return frozenset(_KINDS[k] for k in value)


def _names(value: object) -> tuple[str, ...]:
    """The list itself; each pattern is checked once uid is known (_name_problems)."""
    patterns = _list(value, 'names = ["PostgreSQL.*", "psm_*"]')
    if not patterns:
        raise ValueError('must not be empty: names = ["psm_*"], or leave it out')
    for p in patterns:
        if not isinstance(p, str):
            raise ValueError(f'{p!r} is not a pattern: names = ["psm_*"]')
    return tuple(dict.fromkeys(patterns))


def _unit(value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or value != value.strip():
        raise ValueError('must be a unit name like "billing-worker.service"')
    if value.endswith(_OWNER_UNITS):
        return value
    name, _, kind = value.rpartition(".")
    if value.endswith(_PROCESSLESS_UNITS):
        raise ValueError(
            f"{value!r}: a {kind} unit never has processes, so its owner would always look "
            "stopped and its objects removable while the service using them runs; only "
            f'.service and .scope units own objects: write unit = "{name}.service"'
        )
    raise ValueError(f'{value!r} has no unit type suffix: did you mean "{value}.service"?')


def _ftok_entry(entry: object) -> tuple[str, int]:
    """One { path, proj } entry -> (path, proj), checked."""
    if not isinstance(entry, Mapping) or set(entry) - {"path", "proj"} or "path" not in entry:
        raise ValueError('each entry is { path = "/srv/app/file", proj = "a" }')
    path, proj = entry["path"], entry.get("proj", 1)
    if isinstance(proj, str) and len(proj.encode()) == 1:
        proj = ord(proj)
    if isinstance(proj, bool) or not isinstance(proj, int) or not 0 < proj <= 255:
        raise ValueError(f"proj {entry.get('proj')!r} must be one character (as in PHP) or 1..255")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path {path!r} must be an absolute path")
    return path, proj


def _ftok_key(path: str, proj: int) -> int:
    """A path's key; raises Skipped when the path cannot be read."""
    try:
        return ftok(path, proj)
    except OSError as exc:
        raise Skipped(f"ftok path {path} cannot be read ({exc.strerror})") from None


def instance_parts(path: str) -> list[str]:
    """An ftok path split at each %i (systemd's instance specifier), with %% made one %.

    One part: no %i. Any other specifier is refused: a path means what it says, or fails.
    """
    parts, text = [], ""
    for piece in _SPECIFIER.split(path):
        if piece == "%%":
            text += "%"
        elif piece == "%i":
            parts.append(text)
            text = ""
        elif piece.startswith("%"):
            raise ValueError(
                f"path {path!r}: {piece!r}: only %i (the instance) and %% (a %) are understood"
            )
        else:
            text += piece
    return [*parts, text]


def _template_of(unit: str | None) -> str:
    """The template unit name to suggest for an owner whose unit is not one."""
    if unit is None:
        return "NAME@.service"
    name, _, kind = unit.rpartition(".")
    return f"{name.partition('@')[0]}@.{kind}"


class Skipped(Exception):
    """A policy entry that is warned about and left out, not an error."""


_FIELD_PARSERS: dict[str, Callable[[object], Any]] = {
    "unit": _unit,
    "keys": _keys,
    "kinds": _kinds,
    "uid": resolve_uid,
    "cuid": resolve_uid,
    "private": _bool,
    "min_age": parse_duration,
    "keep_queued_messages": _bool,
    "names": _names,
}
# the top-level settings: at most one file may set each
_SETTING_PARSERS: dict[str, Callable[[object], Any]] = {
    "min_age": parse_duration,
    "pid_namespace_complete": _bool,
}


def _ftok_claims(
    ftoks: object, values: Mapping[str, Any], strict: bool, where: str, warnings: list[str]
) -> tuple[list[int], list[int], list[tuple[str, int]]]:
    """An owner's ftok entries -> (keys claimed, those a non-root user steers, %i patterns)."""
    keys: list[int] = []
    steered: list[int] = []
    per_instance: list[tuple[str, int]] = []
    for entry in _list(ftoks, 'ftok = [{ path = "/srv/app/file", proj = "a" }]'):
        path, proj = _ftok_entry(entry)
        parts = instance_parts(path)
        unit = values.get("unit")
        if len(parts) > 1 and (unit is None or template_parts(unit) is None):
            raise ValueError(
                f"path {path!r}: %i needs a template unit: "
                f'unit = "{_template_of(unit)}" (each instance found on disk is then '
                "an owner of its own)"
            )
        if len(parts) > 1:
            per_instance.append((path, proj))
            continue
        try:
            key, steerable = ftok_claim(parts[0], proj, values.get("uid"), strict)
        except Skipped as skip:
            warnings.append(f"{where} {skip}: that ftok entry is skipped")
            continue
        keys.append(key)
        if steerable:
            steered.append(key)
    return keys, steered, per_instance


def _claimed_kinds(
    values: Mapping[str, Any], patterns: tuple[str, ...], sysv_claims: bool
) -> tuple[frozenset[IpcKind], frozenset[PosixKind], list[tuple[str, str]]]:
    """The System V and POSIX kinds an owner claims, and (problem, field) for each refusal.

    kinds defaults to every kind the owner's claims can cover: names claim the POSIX kinds,
    keys (ftok, private) the System V ones.
    """
    problems = []
    for pattern in patterns:
        why = name_patterns.problem(pattern, has_uid="uid" in values)
        if why:
            problems.append((f"names: {why}", "names"))
    kinds = values.get("kinds")
    if kinds is None:
        return frozenset(IpcKind), frozenset(PosixKind) if patterns else frozenset(), problems
    sysv = frozenset(k for k in kinds if isinstance(k, IpcKind))
    posix = frozenset(k for k in kinds if isinstance(k, PosixKind))
    if posix and not patterns:
        listed = ", ".join(sorted(k.value for k in posix))
        problems.append(
            (f"kinds {listed} need names = [...]: POSIX objects are claimed by name", "kinds")
        )
    if patterns and not posix:
        problems.append(
            ('names claim nothing: kinds lists no POSIX kind (add "posix-shm", ...)', "kinds")
        )
    if sysv_claims and not sysv:
        problems.append(
            ('keys claim nothing: kinds lists no System V kind (add "shm", ...)', "kinds")
        )
    return sysv or frozenset(IpcKind), posix, problems


def _field_values(
    table: Mapping[str, Any], err: Callable[[str, str | None], None]
) -> dict[str, Any]:
    """Each known field of an owner's table, parsed; every unknown or malformed one, and one
    that needs another which is missing, is an error (reported through `err`, with the
    field)."""
    for unknown in sorted(set(table) - _OWNER_FIELDS):
        err(f"unknown field {unknown!r}; fields are {', '.join(sorted(_OWNER_FIELDS))}", unknown)
    values: dict[str, Any] = {}
    for key, parse in _FIELD_PARSERS.items():
        if key in table:
            try:
                values[key] = parse(table[key])
            except ValueError as exc:
                err(f"{key}: {exc}", key)
            except TypeError:  # a table or array where a scalar belongs, and the like
                err(f"{key}: has the wrong type ({type(table[key]).__name__})", key)
    if "cuid" in table and "uid" not in table:
        err("cuid needs uid: it only says who created the objects of uid", "cuid")
    if values.get("private") and "uid" not in table:
        err("private = true needs uid: IPC_PRIVATE objects are claimed by their uid", "private")
    return values


def _parse_owner(
    name: str,
    table: object,
    where: str,
    lines: _LineFinder,
    warnings: list[str],
    *,
    strict: bool = False,
) -> tuple[Owner | None, list[PolicyProblem]]:
    section = f"owners.{name}"
    head = lines.find(section)
    errors: list[PolicyProblem] = []

    def err(problem: str, key: str | None = None) -> None:
        line = (lines.find(section, key) if key else None) or head
        errors.append(PolicyProblem(where, line, f"[{section}] {problem}"))

    if not _OWNER_NAME.match(name):
        err("owner names use letters, digits, '_', '-', '.', '@'")
    if not isinstance(table, Mapping):
        err("must be a table")
        return None, errors
    values = _field_values(table, err)
    ranges = list(values.get("keys", []))
    ftoks = table.get("ftok", [])
    steered: list[int] = []
    per_instance: list[tuple[str, int]] = []
    try:
        claimed = _ftok_claims(ftoks, values, strict, f"{where}: [{section}]", warnings)
        ranges += [(k, k) for k in claimed[0]]
        steered, per_instance = claimed[1], claimed[2]
    except ValueError as exc:
        err(f"ftok: {exc}", "ftok")
    patterns = values.get("names", ())
    sysv_claims = bool(ranges or values.get("private") or ftoks)
    sysv_kinds, posix_kinds, kind_problems = _claimed_kinds(values, patterns, sysv_claims)
    for problem, key in kind_problems:
        err(problem, key)
    if not sysv_claims and not patterns and not errors:
        err("claims nothing: give keys, ftok, names, or private = true with uid")
    if errors:
        return None, errors
    owner = Owner(
        name=name,
        key_ranges=tuple(ranges),
        kinds=sysv_kinds,
        unit=values.get("unit"),
        uid=values.get("uid"),
        cuid=values.get("cuid"),
        private=values.get("private", False),
        min_age=values.get("min_age"),
        keep_queued_messages=values.get("keep_queued_messages", True),
        source=f"{where}:{head}" if head else where,
        per_instance=tuple(per_instance),
        steered=tuple(steered),
        names=patterns,
        posix_kinds=posix_kinds,
    )
    return owner, errors


def _too_deep(text: str, limit: int) -> int | None:
    """The line where arrays and inline tables first nest deeper than limit, if they do
    (counted outside strings and comments)."""
    if text.count("[") + text.count("{") <= limit:
        return None
    depth = 0
    for m in _NESTING_TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return text.count("\n", 0, m.start()) + 1
        elif token in "]}":
            depth = max(0, depth - 1)
    return None


def _too_deep_error(where: str, line: int | None) -> PolicyErrors:
    return PolicyErrors.one(
        where,
        line,
        f"arrays or inline tables nested more than {MAX_NESTING} deep: nesting deeper than "
        'the format needs (at most two: ftok = [{ path = "...", proj = "a" }])',
    )


def _load_toml(text: str, where: str) -> dict[str, Any]:
    """The file's TOML document, or PolicyErrors naming the line (nesting refused first)."""
    deep = _too_deep(text, MAX_NESTING)
    if deep is not None:
        raise _too_deep_error(where, deep)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        problem = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))
        raise PolicyErrors.one(where, line, f"not valid TOML: {problem}") from None
    except RecursionError:  # a nesting the pre-scan missed: find where, at any depth
        raise _too_deep_error(where, _too_deep(text, 64)) from None


def parse_policy_text(text: str, path: str | os.PathLike[str], strict: bool = False) -> ParsedFile:
    """Pure-ish (ftok stats files): one policy file's text -> what it says, or PolicyErrors."""
    where = os.fspath(path)
    data = _load_toml(text, where)
    lines = _LineFinder(text)
    errors: list[PolicyProblem] = []
    warnings: list[str] = []
    for unknown in sorted(set(data) - _TOP_FIELDS):
        errors.append(
            PolicyProblem(
                where,
                lines.find(None, unknown) or lines.find(unknown),
                f"unknown field {unknown!r}; top-level fields are min_age, "
                "pid_namespace_complete and [owners.NAME] tables",
            )
        )
    setting_lines = {key: lines.find(None, key) for key in _SETTING_PARSERS if key in data}
    settings: dict[str, Any] = {}
    for key, parse in _SETTING_PARSERS.items():
        try:
            if key in data:
                settings[key] = parse(data[key])
        except ValueError as exc:
            errors.append(PolicyProblem(where, setting_lines[key], f"{key}: {exc}"))
    owners: dict[str, Owner] = {}
    raw_owners = data.get("owners", {})
    if not isinstance(raw_owners, Mapping):
        errors.append(PolicyProblem(where, lines.find(None, "owners"), "owners must be tables"))
        raw_owners = {}
    for name, table in raw_owners.items():
        owner, owner_errors = _parse_owner(name, table, where, lines, warnings, strict=strict)
        errors.extend(owner_errors)
        if owner is not None:
            owners[name] = owner
    if errors:
        raise PolicyErrors(errors)
    return ParsedFile(
        owners,
        settings.get("min_age"),
        warnings,
        settings.get("pid_namespace_complete"),
        setting_lines,
    )

"""The TOML policy: which service owns which keys, validated before anything is touched."""

from __future__ import annotations

import bisect
import os
import pwd
import re
import stat
import tomllib  # Python >= 3.11, which pystemd requires too: the tomli fallback never applies
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import policy_files
from .errors import PolicyError, PolicyErrors
from .model import IpcKind, IpcObject

SEARCH_PATH = tuple(Path(p) for p in policy_files.SEARCH_PATH)
DEFAULT_MIN_AGE = 600  # "10m": an idle object is left alone for ten minutes
MAX_POLICY_BYTES = 4 * 1024 * 1024
_TOP_FIELDS = {"min_age", "owners", "pid_namespace_complete"}
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
}
_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".slice", ".timer", ".mount", ".swap")
_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_OWNER_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


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

    __slots__ = ("_index", "_private", "min_age", "owners", "pid_namespace_complete", "sources",
                 "warnings")  # fmt: skip

    def __init__(
        self,
        owners: tuple[Owner, ...] = (),
        min_age: int = DEFAULT_MIN_AGE,
        sources: tuple[str, ...] = (),
        warnings: tuple[str, ...] = (),
        pid_namespace_complete: bool = False,
    ) -> None:
        self.owners = owners
        # the operator states that our pid namespace holds every process of our IPC namespace
        self.pid_namespace_complete = pid_namespace_complete
        self.min_age = min_age
        self.sources = sources
        self.warnings = warnings
        self._index: dict[IpcKind, tuple[list[int], list[tuple[int, Owner]]]] = {}
        self._private: dict[tuple[IpcKind, int], Owner] = {}
        for kind in IpcKind:
            spans = _spans(self.owners, kind)
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


def _spans(owners: Iterable[Owner], kind: IpcKind) -> list[tuple[int, int, Owner]]:
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


def ftok(path: str | os.PathLike[str], proj: int) -> int:
    """The key ftok(3) and PHP's ftok() compute: proj, st_dev and st_ino bits, unsigned."""
    st = os.stat(path)
    return ((proj & 0xFF) << 24) | ((st.st_dev & 0xFF) << 16) | (st.st_ino & 0xFFFF)


def parse_duration(value: object) -> int:
    """Seconds from "90s", "10m", "1h30m", "2d", "1w" or a non-negative integer of seconds."""
    if isinstance(value, bool):
        raise ValueError('a duration is a string like "10m" or a number of seconds')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError('a duration is a string like "10m" or a number of seconds')
    text = value.strip()
    if text.isdigit():
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f'{value!r} is not a duration: use e.g. "90s", "10m", "1h30m", "2d"')
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


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


def parse_key(text: str) -> int:
    t = text.strip().lower()
    value = int(t, 16) if t.startswith("0x") else int(t, 10)
    if value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"key {text} is outside 0..0xffffffff (keys are 32 bits)")
    return value


def parse_key_spec(spec: object) -> tuple[int, int]:
    """ "0x61040000-0x6104ffff", "0x62000001", "1000" or 1000 -> inclusive (low, high)."""
    if isinstance(spec, bool):
        raise ValueError('a key is a number or a string like "0x61040000"')
    if isinstance(spec, int):
        low = high = parse_key(str(spec))
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
    if isinstance(value, bool):
        raise ValueError("uid is a user name or a number")
    if isinstance(value, int):
        if not 0 <= value < 2**32 - 1:
            raise ValueError(f"uid {value} is out of range")
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            raise ValueError(f"no user named {value!r} on this host") from None
    raise ValueError("uid is a user name or a number")


class _LineFinder:
    """Best-effort source lines for semantic errors: TOML parsers keep no positions."""

    _HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def find(self, table: str | None, key: str | None = None) -> int | None:
        current: str | None = None
        for no, line in enumerate(self.lines, start=1):
            m = self._HEADER.match(line)
            if m:
                current = re.sub(r"\s*\.\s*", ".", m.group(1)).replace('"', "").replace("'", "")
                if key is None and current == table:
                    return no
                continue
            if (
                key is not None
                and current == table
                and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", line)
            ):
                return no
        return None


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


def _kinds(value: object) -> frozenset[IpcKind]:
    valid = {k.value for k in IpcKind}
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(k, str) and k in valid for k in value)
    ):
        raise ValueError('must be a non-empty list of "shm", "sem", "msg"')
    return frozenset(IpcKind(k) for k in value)


def _unit(value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or value != value.strip():
        raise ValueError('must be a unit name like "billing-worker.service"')
    if not value.endswith(_UNIT_SUFFIXES):
        raise ValueError(f'{value!r} has no unit type suffix: did you mean "{value}.service"?')
    return value


def _ftok_key(entry: object) -> int:
    """One { path, proj } entry -> its key; raises _Skipped when the path cannot be read."""
    if not isinstance(entry, Mapping) or set(entry) - {"path", "proj"} or "path" not in entry:
        raise ValueError('each entry is { path = "/srv/app/file", proj = "a" }')
    path, proj = entry["path"], entry.get("proj", 1)
    if isinstance(proj, str) and len(proj.encode()) == 1:
        proj = ord(proj)
    if isinstance(proj, bool) or not isinstance(proj, int) or not 0 < proj <= 255:
        raise ValueError(f"proj {entry.get('proj')!r} must be one character (as in PHP) or 1..255")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path {path!r} must be an absolute path")
    try:
        return ftok(path, proj)
    except OSError as exc:
        raise _Skipped(f"ftok path {path} cannot be read ({exc.strerror})") from None


class _Skipped(Exception):
    """A policy entry that is warned about and left out, not an error."""


_FIELD_PARSERS: dict[str, Any] = {
    "unit": _unit,
    "keys": _keys,
    "kinds": _kinds,
    "uid": resolve_uid,
    "cuid": resolve_uid,
    "private": _bool,
    "min_age": parse_duration,
    "keep_queued_messages": _bool,
}


def _parse_owner(
    name: str, table: object, where: Path, lines: _LineFinder, warnings: list[str]
) -> tuple[Owner | None, list[PolicyError]]:
    section = f"owners.{name}"
    head = lines.find(section)
    errors: list[PolicyError] = []

    def err(problem: str, key: str | None = None) -> None:
        line = (lines.find(section, key) if key else None) or head
        errors.append(PolicyError(where, line, f"[{section}] {problem}"))

    if not _OWNER_NAME.match(name):
        err("owner names use letters, digits, '_', '-', '.', '@'")
    if not isinstance(table, Mapping):
        err("must be a table")
        return None, errors
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
    ranges = list(values.get("keys", []))
    ftoks = table.get("ftok", [])
    try:
        for entry in _list(ftoks, 'ftok = [{ path = "/srv/app/file", proj = "a" }]'):
            try:
                ftok_key = _ftok_key(entry)
            except _Skipped as skip:
                warnings.append(f"{where}: [{section}] {skip}: that ftok entry is skipped")
                continue
            ranges.append((ftok_key, ftok_key))
    except ValueError as exc:
        err(f"ftok: {exc}", "ftok")
    if "cuid" in table and "uid" not in table:
        err("cuid needs uid: it only says who created the objects of uid", "cuid")
    if values.get("private") and "uid" not in table:
        err("private = true needs uid: IPC_PRIVATE objects are claimed by their uid", "private")
    if not ranges and not values.get("private") and not errors and not ftoks:
        err("claims nothing: give keys, ftok, or private = true with uid")
    if errors:
        return None, errors
    owner = Owner(
        name=name,
        key_ranges=tuple(ranges),
        kinds=values.get("kinds", frozenset(IpcKind)),
        unit=values.get("unit"),
        uid=values.get("uid"),
        cuid=values.get("cuid"),
        private=values.get("private", False),
        min_age=values.get("min_age"),
        keep_queued_messages=values.get("keep_queued_messages", True),
        source=f"{where}:{head}" if head else str(where),
    )
    return owner, errors


def parse_policy_text(
    text: str, where: Path
) -> tuple[dict[str, Owner], int | None, list[str], bool | None]:
    """Pure-ish (ftok stats files): one policy file -> owners, its min_age if set, warnings."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        problem = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))
        raise PolicyError(where, line, f"not valid TOML: {problem}") from None
    lines = _LineFinder(text)
    errors: list[PolicyError] = []
    warnings: list[str] = []
    for unknown in sorted(set(data) - _TOP_FIELDS):
        errors.append(
            PolicyError(
                where,
                lines.find(None, unknown) or lines.find(unknown),
                f"unknown field {unknown!r}; top-level fields are min_age and [owners.NAME] tables",
            )
        )
    min_age: int | None = None
    if "min_age" in data:
        try:
            min_age = parse_duration(data["min_age"])
        except ValueError as exc:
            errors.append(PolicyError(where, lines.find(None, "min_age"), f"min_age: {exc}"))
    complete: bool | None = None
    if "pid_namespace_complete" in data:
        try:
            complete = _bool(data["pid_namespace_complete"])
        except ValueError as exc:
            errors.append(
                PolicyError(
                    where,
                    lines.find(None, "pid_namespace_complete"),
                    f"pid_namespace_complete: {exc}",
                )
            )
    owners: dict[str, Owner] = {}
    raw_owners = data.get("owners", {})
    if not isinstance(raw_owners, Mapping):
        errors.append(PolicyError(where, lines.find(None, "owners"), "owners must be tables"))
        raw_owners = {}
    for name, table in raw_owners.items():
        owner, owner_errors = _parse_owner(name, table, where, lines, warnings)
        errors.extend(owner_errors)
        if owner is not None:
            owners[name] = owner
    if errors:
        raise PolicyErrors(errors)
    return owners, min_age, warnings, complete


def find_policy_files(explicit: str | None) -> list[Path]:
    """The files to read, in order: --policy/IPCJANITOR_POLICY, else the search path."""
    found = policy_files.search(explicit, [str(p) for p in SEARCH_PATH])
    if found is None:
        raise PolicyError(explicit, None, "no such policy file or directory")
    return [Path(f) for f in found]


def _check_not_writable_by_others(path: Path, is_dir_scan: bool) -> None:
    """Like sshd's StrictModes: refuse what a non-root user could have written or swapped.

    The file and its directory (or a scanned directory) and every directory above must be
    owned by root and not writable by group or others; higher up a sticky directory (like
    /tmp) is accepted, since nobody else can rename our entries out of it.
    A symlink is followed, and the directories holding the link are checked the same way.
    """
    _check_chain(path, path.resolve(), is_dir_scan)
    if path.is_symlink():
        _check_chain(path, path.parent.resolve(), True)


def _check_chain(named: Path, real: Path, starts_with_dir: bool) -> None:
    strict = 1 if starts_with_dir else 2  # a file and its directory, or a scanned directory
    for i, p in enumerate([real, *real.parents]):
        st = p.stat()
        what = "directory" if i > 0 or starts_with_dir else "file"
        if st.st_uid != 0:
            raise PolicyError(
                named,
                None,
                f"{what} {p} is owned by uid {st.st_uid}, not root; as root "
                f"ipcjanitor only reads policy that only root can change (chown root {p})",
            )
        loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        # the file and the directory holding it must be strict; a sticky directory higher
        # up cannot have our entries renamed away by others
        if loose and not (i >= strict and st.st_mode & stat.S_ISVTX):
            raise PolicyError(
                named,
                None,
                f"{what} {p} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); as root ipcjanitor refuses it (chmod go-w {p})",
            )


def load_policy(explicit: str | None = None, *, strict_modes: bool | None = None) -> Policy:
    """Read, check and merge the policy; raise PolicyErrors naming every problem."""
    if explicit is None:
        explicit = os.environ.get("IPCJANITOR_POLICY") or None
    if strict_modes is None:
        strict_modes = os.geteuid() == 0
    files = find_policy_files(explicit)
    if not files:
        if explicit:
            return Policy(sources=(f"{explicit} (no *.toml files)",))
        return EMBEDDED_DEFAULT
    errors: list[PolicyError] = []
    owners: dict[str, Owner] = {}
    min_age = DEFAULT_MIN_AGE
    complete = False
    warnings: list[str] = []
    if strict_modes and explicit and Path(explicit).is_dir():
        try:
            _check_not_writable_by_others(Path(explicit), True)
        except PolicyError as exc:
            errors.append(exc)
    for path in files:
        try:
            if strict_modes:
                _check_not_writable_by_others(path, False)
            text = _read_policy_file(path)
            file_owners, file_min_age, file_warnings, file_complete = parse_policy_text(text, path)
        except PolicyErrors as exc:
            errors.extend(exc.errors)
            continue
        except PolicyError as exc:
            errors.append(exc)
            continue
        if file_min_age is not None:
            min_age = file_min_age
        if file_complete is not None:
            complete = file_complete
        owners.update(file_owners)  # a later file's owner of the same name replaces it
        warnings.extend(file_warnings)
    if not errors:
        errors.extend(check_overlaps(list(owners.values())))
    if errors:
        raise PolicyErrors(errors)
    return Policy(
        owners=tuple(owners.values()),
        min_age=min_age,
        sources=tuple(str(f) for f in files),
        warnings=tuple(warnings),
        pid_namespace_complete=complete,
    )


def _read_policy_file(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_POLICY_BYTES:
            raise PolicyError(
                path, None, f"larger than {MAX_POLICY_BYTES // 2**20} MiB: not a policy"
            )
        text = path.read_bytes().decode("utf-8")
        if not text.strip():
            raise PolicyError(
                path, None, "is empty: a truncated policy? give it owners or remove the file"
            )
        return text
    except UnicodeDecodeError as exc:
        raise PolicyError(
            path, None, f"not UTF-8 text (byte {exc.start}): is this a policy?"
        ) from None
    except OSError as exc:
        raise PolicyError(path, None, f"cannot read: {exc.strerror}") from None


def check_overlaps(owners: Sequence[Owner]) -> list[PolicyError]:
    """Two owners may not claim one key of one kind (or IPC_PRIVATE of one uid)."""
    clashes: dict[tuple[str, str], tuple[Owner, Owner, str, list[str]]] = {}

    def clash(a: Owner, b: Owner, what: str, kind: IpcKind) -> None:
        entry = clashes.setdefault((a.name, b.name), (a, b, what, []))
        entry[3].append(kind.value)

    for kind in IpcKind:
        spans = _spans(owners, kind)
        reach: tuple[int, Owner] | None = None  # the furthest-reaching span so far
        for low, high, o in spans:
            if reach is not None and low <= reach[0] and reach[1].name != o.name:
                clash(o, reach[1], f"key 0x{low:08x}", kind)
            if reach is None or high > reach[0]:
                reach = (high, o)
        private: dict[int, Owner] = {}
        for o in owners:
            if o.private and o.uid is not None and kind in o.kinds:
                if o.uid in private:
                    clash(o, private[o.uid], f"IPC_PRIVATE of uid {o.uid}", kind)
                private[o.uid] = o
    return [_overlap_error(a, b, "/".join(kinds), what) for a, b, what, kinds in clashes.values()]


def _overlap_error(a: Owner, b: Owner, kinds: str, what: str) -> PolicyError:
    path, _, line = a.source.rpartition(":")
    return PolicyError(
        path or a.source,
        int(line) if line.isdigit() else None,
        f"owners {b.name!r} ({b.source}) and {a.name!r} both claim {kinds} {what}: "
        "give each key to one owner",
    )


def describe(policy: Policy) -> Iterable[str]:
    """Human lines for `policy check`."""
    yield f"policy from: {', '.join(policy.sources) or '<embedded default>'}"
    yield f"global min_age: {format_duration(policy.min_age)}"
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

"""Find, check and merge the policy files into one Policy; raise PolicyErrors naming them all."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from . import policy_files
from .errors import PolicyErrors, PolicyProblem
from .model import IpcKind
from .policy import DEFAULT_MIN_AGE, EMBEDDED_DEFAULT, Owner, Policy, key_spans
from .policy_parse import parse_policy_text

MAX_POLICY_BYTES = 4 * 1024 * 1024


def find_policy_files(explicit: str | None) -> list[Path]:
    """The files to read, in order: --policy/IPCJANITOR_POLICY, else the search path."""
    found = policy_files.search(explicit, policy_files.SEARCH_PATH)
    if found is None:
        raise PolicyErrors.one(explicit, None, "no such policy file or directory")
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
            raise PolicyErrors.one(
                named,
                None,
                f"{what} {p} is owned by uid {st.st_uid}, not root; as root "
                f"ipcjanitor only reads policy that only root can change (chown root {p})",
            )
        loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        # the file and the directory holding it must be strict; a sticky directory higher
        # up cannot have our entries renamed away by others
        if loose and not (i >= strict and st.st_mode & stat.S_ISVTX):
            raise PolicyErrors.one(
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
    problems: list[PolicyProblem] = []
    owners: dict[str, Owner] = {}
    min_age = DEFAULT_MIN_AGE
    complete = False
    warnings: list[str] = []
    if strict_modes and explicit and Path(explicit).is_dir():
        try:
            _check_not_writable_by_others(Path(explicit), True)
        except PolicyErrors as exc:
            problems.extend(exc.problems)
    for path in files:
        try:
            if strict_modes:
                _check_not_writable_by_others(path, False)
            text = _read_policy_file(path)
            parsed = parse_policy_text(text, str(path))
        except PolicyErrors as exc:
            problems.extend(exc.problems)
            continue
        if parsed.min_age is not None:
            min_age = parsed.min_age
        if parsed.pid_namespace_complete is not None:
            complete = parsed.pid_namespace_complete
        owners.update(parsed.owners)  # a later file's owner of the same name replaces it
        warnings.extend(parsed.warnings)
    if not problems:
        problems.extend(check_overlaps(list(owners.values())))
    if problems:
        raise PolicyErrors(problems)
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
            raise PolicyErrors.one(
                path, None, f"larger than {MAX_POLICY_BYTES // 2**20} MiB: not a policy"
            )
        text = path.read_bytes().decode("utf-8")
        if not text.strip():
            raise PolicyErrors.one(
                path, None, "is empty: a truncated policy? give it owners or remove the file"
            )
        return text
    except UnicodeDecodeError as exc:
        raise PolicyErrors.one(
            path, None, f"not UTF-8 text (byte {exc.start}): is this a policy?"
        ) from None
    except OSError as exc:
        raise PolicyErrors.one(path, None, f"cannot read: {exc.strerror}") from None


def check_overlaps(owners: Sequence[Owner]) -> list[PolicyProblem]:
    """Two owners may not claim one key of one kind (or IPC_PRIVATE of one uid)."""
    clashes: dict[tuple[str, str], tuple[Owner, Owner, str, list[str]]] = {}

    def clash(a: Owner, b: Owner, what: str, kind: IpcKind) -> None:
        entry = clashes.setdefault((a.name, b.name), (a, b, what, []))
        entry[3].append(kind.value)

    for kind in IpcKind:
        spans = key_spans(owners, kind)
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


def _overlap_error(a: Owner, b: Owner, kinds: str, what: str) -> PolicyProblem:
    path, _, line = a.source.rpartition(":")
    return PolicyProblem(
        path or a.source,
        int(line) if line.isdigit() else None,
        f"owners {b.name!r} ({b.source}) and {a.name!r} both claim {kinds} {what}: "
        "give each key to one owner",
    )

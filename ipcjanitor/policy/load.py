"""Find, check and merge the policy files into one Policy; raise PolicyErrors naming them all."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from ..accounts import user_name
from ..errors import PolicyErrors, PolicyProblem
from ..model import IpcKind, PosixKind
from . import files as policy_files
from . import instances as policy_instances
from .model import DEFAULT_MIN_AGE, EMBEDDED_DEFAULT, Owner, Policy, key_spans
from .names import common_name
from .parse import parse_policy_text


def _whole(
    owners: list[Owner], strict_modes: bool, warnings: list[str], problems: list[PolicyProblem]
) -> list[Owner]:
    """The merged owners checked as a whole: templates expanded, then overlaps (appended to
    `warnings` and `problems`)."""
    owners, found, clashes = policy_instances.expand(owners, strict_modes)
    warnings.extend(found)
    problems.extend(clashes)
    if problems:
        return owners
    owners, dropped = drop_steered_clashes(owners)
    warnings.extend(dropped)
    problems.extend(check_overlaps(owners))
    warnings.extend(name_overlaps(owners))
    return owners


def load_policy(
    explicit: str | None = None, *, strict_modes: bool | None = None, from_env: bool = True
) -> Policy:
    """Read, check and merge the policy; raise PolicyErrors naming every problem.

    explicit (--policy) replaces the search path, and so does IPCJANITOR_POLICY unless
    from_env is false (the hook: it runs as root with the service's Environment=).
    strict_modes (default: when running as root) refuses what a non-root user could have
    written or redirected, like sshd's StrictModes; see chase.py.
    """
    if explicit is None and from_env:
        explicit = os.environ.get("IPCJANITOR_POLICY") or None
    if strict_modes is None:
        strict_modes = os.geteuid() == 0
    files, refused = policy_files.read(explicit, strict_modes)
    problems = [PolicyProblem(path, None, problem) for path, problem in refused]
    if not files and not problems:
        if explicit:
            return Policy(sources=(f"{explicit} (no *.toml files)",))
        return EMBEDDED_DEFAULT
    merged = _merge(files, strict_modes, problems)
    warnings = merged.warnings
    resolved = list(merged.owners.values())
    if not problems:
        resolved = _whole(resolved, strict_modes, warnings, problems)
    if problems:
        raise PolicyErrors(problems)
    return Policy(
        owners=tuple(resolved),
        min_age=merged.min_age,
        sources=tuple(path for path, _ in files),
        warnings=tuple(warnings),
        pid_namespace_complete=merged.complete,
        user_name=user_name,
    )


class _Merged(NamedTuple):
    owners: dict[str, Owner]
    min_age: float
    complete: bool
    warnings: list[str]


def _merge(
    files: list[tuple[str, bytes]], strict_modes: bool, problems: list[PolicyProblem]
) -> _Merged:
    """The files' settings merged in order (a later owner of the same name replaces one);
    each file's problems, and each setting set in two files, appended to problems."""
    owners: dict[str, Owner] = {}
    min_age: float = DEFAULT_MIN_AGE
    complete = False
    set_in: dict[str, str] = {}  # top-level setting -> the file:line that set it
    warnings: list[str] = []
    for path, data in files:
        try:
            parsed = parse_policy_text(_text(path, data), path, strict_modes)
        except PolicyErrors as exc:
            problems.extend(exc.problems)
            continue
        for key, line in parsed.lines.items():
            if key in set_in:
                again = f"{key} is also set in {set_in[key]}: set it in one file only"
                problems.append(PolicyProblem(path, line, again))
            set_in[key] = f"{path}:{line}" if line else path
        if parsed.min_age is not None:
            min_age = parsed.min_age
        if parsed.pid_namespace_complete is not None:
            complete = parsed.pid_namespace_complete
        owners.update(parsed.owners)  # a later file's owner of the same name replaces it
        warnings.extend(parsed.warnings)
    return _Merged(owners, min_age, complete, warnings)


def _text(path: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyErrors.one(
            path, None, f"not UTF-8 text (byte {exc.start}): is this a policy?"
        ) from None
    if not text.strip():
        raise PolicyErrors.one(
            path, None, "is empty: a truncated policy? give it owners or remove the file"
        )
    return text


def drop_steered_clashes(owners: Sequence[Owner]) -> tuple[list[Owner], list[str]]:
    """Keys a non-root user steers (Owner.steered) that another owner also claims are skipped
    with a warning, not a policy error: an error would let that user stop every clean."""
    out, warnings = [], []
    for o in owners:
        dropped = [
            k
            for k in o.steered
            if any(
                p is not o and p.kinds & o.kinds and any(lo <= k <= hi for lo, hi in p.key_ranges)
                for p in owners
            )
        ]
        if not dropped:
            out.append(o)
            continue
        for k in dropped:
            warnings.append(
                f"{o.source}: [owners.{o.name}] key 0x{k:08x} comes from an ftok path uid {o.uid} "
                "controls and another owner claims it too: that entry is skipped (its user could "
                "have pointed it there; make the path root's to have it checked as an error)"
            )
        keep = [r for r in o.key_ranges if not (r[0] == r[1] and r[0] in dropped)]
        out.append(o._replace(key_ranges=tuple(keep), steered=()))
    return out, warnings


def check_overlaps(owners: Sequence[Owner]) -> list[PolicyProblem]:
    """Two owners may not claim one key of one kind (or IPC_PRIVATE of one uid and creator)."""
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
        private: dict[int, list[Owner]] = {}
        for o in owners:
            if o.private and o.uid is not None and kind in o.kinds:
                for other in private.setdefault(o.uid, []):
                    # cuid narrows: only two different creators keep two owners apart
                    if o.cuid is None or other.cuid is None or o.cuid == other.cuid:
                        by = o.cuid if o.cuid is not None else other.cuid
                        created = "" if by is None else f" created by uid {by}"
                        clash(o, other, f"IPC_PRIVATE of uid {o.uid}{created}", kind)
                private[o.uid].append(o)
    return [_overlap_error(a, b, "/".join(kinds), what) for a, b, what, kinds in clashes.values()]


def _overlap_error(a: Owner, b: Owner, kinds: str, what: str) -> PolicyProblem:
    path, _, line = a.source.rpartition(":")
    fix = "give each key to one owner"
    if a.template == b.name or b.template == a.name:
        fix = "a key is one instance's (ftok with %i) or shared by all (keys, ftok without %i)"
    return PolicyProblem(
        path or a.source,
        int(line) if line.isascii() and line.isdigit() else None,
        f"owners {b.name!r} ({b.source}) and {a.name!r} both claim {kinds} {what}: {fix}",
    )


def name_overlaps(owners: Sequence[Owner]) -> list[str]:
    """Each pair of owners whose patterns can match one name of one POSIX kind, with the
    shortest such name (decided by names.common_name, not sampled)."""
    out = []
    for i, a in enumerate(owners):
        for b in owners[i + 1 :]:
            kinds = a.posix_kinds & b.posix_kinds
            if not kinds or (a.uid is not None and b.uid is not None and a.uid != b.uid):
                continue
            slash = PosixKind.SHM in kinds
            found = next(
                (
                    (pa, pb, name)
                    for pa in a.names
                    for pb in b.names
                    if (name := common_name(pa, pb, slash=slash)) is not None
                ),
                None,
            )
            if found is None:
                continue
            pa, pb, name = found
            which = "/".join(k.value for k in PosixKind if k in kinds)
            out.append(
                f"owners {a.name} ({a.source}) and {b.name} ({b.source}) can both claim "
                f"{which} name {name!r} (patterns {pa!r} and {pb!r}): an object both claim "
                "is unowned and never removed; make the patterns disjoint"
            )
    return out

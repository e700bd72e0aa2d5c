"""Render decisions: an ipcs-like table with owner, verdict and reason, or one JSON document."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..accounts import user_name
from ..escape import safe_name
from ..model import Decision, IpcKind, IpcObject, PosixDecision, PosixKind, Verdict

_COLUMNS = ("KIND", "KEY", "ID", "OWNER", "USER", "PERMS", "SIZE", "NATTCH", "VERDICT", "REASON")
_POSIX_COLUMNS = ("KIND", "NAME", "OWNER", "USER", "PERMS", "SIZE", "VERDICT", "REASON")


def user_cell(uid: int) -> str:
    return user_name(uid) or str(uid)


def size_cell(o: IpcObject) -> str:
    if o.kind is IpcKind.SHM:
        return str(o.size)
    if o.kind is IpcKind.SEM:
        return f"{o.nsems} sem{'s' if o.nsems != 1 else ''}"
    return f"{o.qnum} msg{'s' if o.qnum != 1 else ''}"


def table(decisions: Sequence[Decision]) -> str:
    rows = [
        (
            d.obj.kind.value,
            f"0x{d.obj.key:08x}",
            str(d.obj.id),
            d.owner or "-",
            user_cell(d.obj.uid),
            f"{d.obj.mode & 0o777:o}",
            size_cell(d.obj),
            str(d.obj.nattch) if d.obj.nattch is not None else "-",
            d.verdict.value,
            d.reason,
        )
        for d in decisions
    ]
    return _aligned(_COLUMNS, rows)


def _aligned(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns[:-1])]
    lines = []
    for r in [columns, *rows]:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        )
    return "\n".join(lines)


def posix_size_cell(d: PosixDecision) -> str:
    if d.obj.kind is PosixKind.MQ and d.obj.qnum is not None:
        return f"{d.obj.qnum} msg{'s' if d.obj.qnum != 1 else ''}"
    return str(d.obj.size)


def posix_table(decisions: Sequence[PosixDecision]) -> str:
    """POSIX objects: a NAME column where System V shows KEY and ID, made safe to print."""
    rows = [
        (
            d.obj.kind.value,
            safe_name(d.obj.name),
            d.owner or "-",
            user_cell(d.obj.uid),
            f"{d.obj.mode & 0o7777:o}",
            posix_size_cell(d),
            d.verdict.value,
            safe_name(d.reason),
        )
        for d in decisions
    ]
    return _aligned(_POSIX_COLUMNS, rows)


def _iso_ns(t: int) -> str:
    return datetime.fromtimestamp(t / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def posix_json(d: PosixDecision) -> dict[str, Any]:
    o = d.obj
    out: dict[str, Any] = {
        "kind": o.kind.value,
        "name": safe_name(o.name),
        "dev": f"{os.major(o.dev)}:{os.minor(o.dev)}",
        "inode": o.ino,
        "owner": d.owner,
        "uid": o.uid,
        "gid": o.gid,
        "perms": f"{o.mode & 0o7777:04o}",
        "size": o.size,
        "nlink": o.nlink,
    }
    if o.kind is PosixKind.MQ:
        out["qnum"] = o.qnum
    out["times"] = {"mtime": _iso_ns(o.mtime_ns), "ctime": _iso_ns(o.ctime_ns),
                    "atime": _iso_ns(o.atime_ns)}  # fmt: skip
    out["holders"] = [safe_name(h) for h in d.holders]
    out["verdict"] = d.verdict.value
    out["reason"] = safe_name(d.reason)
    return out


def summary_line(decisions: Sequence[Decision | PosixDecision]) -> str:
    counts = Counter(d.verdict for d in decisions)
    parts = [f"{counts[v]} {v.value}" for v in Verdict if counts[v]]
    n = len(decisions)
    return f"{n} object{'s' if n != 1 else ''}" + (": " + ", ".join(parts) if parts else "")


def _iso(t: int) -> str | None:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def object_json(d: Decision) -> dict[str, Any]:
    o = d.obj
    out: dict[str, Any] = {
        "kind": o.kind.value,
        "key": f"0x{o.key:08x}",
        "id": o.id,
        "owner": d.owner,
        "uid": o.uid,
        "gid": o.gid,
        "cuid": o.cuid,
        "cgid": o.cgid,
        "perms": f"{o.mode & 0o777:04o}",
    }
    pids = {r.role: r.pid for r in o.pids}
    if o.kind is IpcKind.SHM:
        out |= {
            "size": o.size,
            "nattch": o.nattch,
            "cpid": pids["creator"],
            "lpid": pids["last shmat/shmdt"],
        }
    elif o.kind is IpcKind.SEM:
        out |= {
            "nsems": o.nsems,
            "nattch": None,
            "pids": [r.pid for r in o.pids],
            "ncnt": o.ncnt,
            "zcnt": o.zcnt,
        }
    else:
        out |= {
            "qnum": o.qnum,
            "cbytes": o.qbytes,
            "nattch": None,
            "lspid": pids["last sender"],
            "lrpid": pids["last receiver"],
        }
    out["times"] = {name: _iso(t) for name, t in o.times}
    out["verdict"] = d.verdict.value
    out["reason"] = d.reason
    return out


def document(
    decisions: Sequence[Decision],
    extra: dict[str, Any] | None = None,
    posix: Sequence[PosixDecision] = (),
) -> str:
    counts = Counter(d.verdict.value for d in decisions)
    counts.update(d.verdict.value for d in posix)
    summary: dict[str, Any] = {
        "total": len(decisions) + len(posix),
        "by_verdict": {v.value: counts.get(v.value, 0) for v in Verdict},
        **(extra or {}),
    }
    import json  # noqa: PLC0415  (here: the hook, in every restart path, prints text)

    return json.dumps(
        {
            "objects": [object_json(d) for d in decisions] + [posix_json(d) for d in posix],
            "summary": summary,
        },
        indent=2,
    )


def failed(decisions: Iterable[Decision | PosixDecision]) -> bool:
    return any(d.verdict is Verdict.FAILED for d in decisions)


def emit(
    decisions: Sequence[Decision],
    *,
    as_json: bool,
    quiet: bool,
    notes: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
    posix: Sequence[PosixDecision] = (),
) -> None:
    """Print a run: one JSON document, or the tables, their notes and the summary line."""
    if as_json:
        print(document(decisions, {**(extra or {}), "notes": list(notes)}, posix))
        return
    if not quiet:
        if decisions:
            print(table(decisions))
        if posix:
            if decisions:
                print()
            print(posix_table(posix))
        for note in notes:
            print(f"note: {safe_name(note)}")
    print(summary_line([*decisions, *posix]))

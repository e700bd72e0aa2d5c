"""Render decisions: an lsipc-like table with the policy owner, verdict and reason, its --raw
form, or one JSON document. The columns are described once (COLUMNS, POSIX_COLUMNS: see
columns.py); the table, --json and the journal's records walk them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from ..accounts import user_name
from ..escape import safe_name
from ..model import Decision, IpcKind, PosixDecision, PosixKind, Verdict
from .columns import ABSENT, Column, Style, as_json, render, size_text, time_text

SHM, SEM, MSG = IpcKind.SHM, IpcKind.SEM, IpcKind.MSG
# VERDICT's colour on a terminal (SGR): what needs a look red, what was freed green
VERDICT_COLOURS = {"stale": "1;33", "failed": "1;31", "changed": "33", "unknown": "33",
                   "removed": "32"}  # fmt: skip


def user_cell(uid: int) -> str:
    return user_name(uid) or str(uid)


def _pid(d: Decision, role: str) -> int:
    return next((r.pid for r in d.obj.pids if r.role == role), 0)


def _only(kind: IpcKind, get: Any) -> Any:
    """A JSON value this kind has; ABSENT (no key) for the others."""
    return lambda d: get(d) if d.obj.kind is kind else ABSENT


def _cell(value: Any) -> str:
    return "-" if value is ABSENT or value is None else str(value)


def _iso(t: int) -> str | None:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def _paint(d: Decision | PosixDecision) -> str | None:
    return VERDICT_COLOURS.get(d.verdict.value)


def _reason(d: Decision, style: Style) -> str:
    return d.reason


def _cpid(d: Decision) -> int:
    return _pid(d, "creator")


def _lpid(d: Decision) -> int:
    return _pid(d, "last shmat/shmdt")


_nattch = _only(SHM, lambda d: d.obj.nattch)
_size = _only(SHM, lambda d: d.obj.size)
_nsems = _only(SEM, lambda d: d.obj.nsems)
_ncnt = _only(SEM, lambda d: d.obj.ncnt)
_zcnt = _only(SEM, lambda d: d.obj.zcnt)
_qnum = _only(MSG, lambda d: d.obj.qnum)
_cbytes = _only(MSG, lambda d: d.obj.qbytes)
_lspid = _only(MSG, lambda d: _pid(d, "last sender"))
_lrpid = _only(MSG, lambda d: _pid(d, "last receiver"))


class _Ids(Protocol):
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...


class Owned(Protocol):
    """What the ownership columns read: a System V or a POSIX decision."""

    @property
    def obj(self) -> _Ids: ...
    @property
    def owner(self) -> str | None: ...


# Both tables' ownership, in lsipc's names: POLICY is the policy owner ([owners.NAME]) that
# claims it; OWNER is the user (its name, else the uid), as in lsipc and ipcs.
OWNERSHIP: tuple[Column[Owned], ...] = (
    Column("POLICY", "the policy owner that claims it ([owners.NAME]); - for none",
           lambda d, s: d.owner or "-", "owner", lambda d: d.owner, "IPCJANITOR_OWNER"),
    Column("OWNER", "its owner: the user's name, else the uid (as lsipc)",
           lambda d, s: user_cell(d.obj.uid)),
    Column("UID", "its owner's uid", lambda d, s: str(d.obj.uid),
           "uid", lambda d: d.obj.uid, "IPCJANITOR_UID", right=True),
    Column("GID", "its group's gid", lambda d, s: str(d.obj.gid),
           "gid", lambda d: d.obj.gid, right=True),
)  # fmt: skip

# System V objects, in lsipc's names where it has one.
COLUMNS: tuple[Column[Decision], ...] = (
    Column("KIND", "shm, sem or msg", lambda d, s: d.obj.kind.value,
           "kind", lambda d: d.obj.kind.value, "IPCJANITOR_KIND"),
    Column("KEY", "the key, in hex (0x00000000: IPC_PRIVATE)", lambda d, s: f"0x{d.obj.key:08x}",
           "key", lambda d: f"0x{d.obj.key:08x}", "IPCJANITOR_KEY"),
    Column("ID", "the kernel's id", lambda d, s: str(d.obj.id),
           "id", lambda d: d.obj.id, "IPCJANITOR_ID", right=True),
    *OWNERSHIP,
    Column("CUSER", "its creator: the user's name, else the uid",
           lambda d, s: user_cell(d.obj.cuid), "cuid", lambda d: d.obj.cuid),
    Column("CGID", "its creator's gid", lambda d, s: str(d.obj.cgid),
           "cgid", lambda d: d.obj.cgid, right=True),
    Column("PERMS", "permission bits, octal", lambda d, s: f"{d.obj.mode & 0o777:o}",
           "perms", lambda d: f"{d.obj.mode & 0o777:04o}"),
    Column("SIZE", "a segment's size (shm; --bytes: in bytes)",
           lambda d, s: size_text(d.obj.size, s) if d.obj.kind is SHM else "-",
           "size", _size, right=True),
    Column("NSEMS", "semaphores in the set (sem)", lambda d, s: _cell(_nsems(d)),
           "nsems", _nsems, right=True),
    Column("MSGS", "messages queued (msg)", lambda d, s: _cell(_qnum(d)),
           "qnum", _qnum, right=True),
    Column("USEDBYTES", "bytes queued (msg; --bytes: in bytes)",
           lambda d, s: size_text(d.obj.qbytes, s) if d.obj.kind is MSG else "-",
           "cbytes", _cbytes, right=True),
    Column("NATTCH", "processes attached (shm)", lambda d, s: _cell(_nattch(d)),
           "nattch", lambda d: d.obj.nattch, right=True),
    Column("CPID", "the creator's pid (shm)", lambda d, s: _cell(_only(SHM, _cpid)(d)),
           "cpid", _only(SHM, _cpid), right=True),
    Column("LPID", "the last shmat/shmdt's pid (shm)",
           lambda d, s: _cell(_only(SHM, _lpid)(d)), "lpid", _only(SHM, _lpid), right=True),
    Column("PIDS", "every pid it records (0: none, or hidden)",
           lambda d, s: ",".join(str(r.pid) for r in d.obj.pids) or "-",
           "pids", _only(SEM, lambda d: [r.pid for r in d.obj.pids]), "IPCJANITOR_PIDS",
           lambda d: " ".join(str(r.pid) for r in d.obj.pids if r.pid)),
    Column("NCNT", "processes waiting for an increase (sem)", lambda d, s: _cell(_ncnt(d)),
           "ncnt", _ncnt, right=True),
    Column("ZCNT", "processes waiting for zero (sem)", lambda d, s: _cell(_zcnt(d)),
           "zcnt", _zcnt, right=True),
    Column("LSPID", "the last sender's pid (msg)", lambda d, s: _cell(_lspid(d)),
           "lspid", _lspid, right=True),
    Column("LRPID", "the last receiver's pid (msg)", lambda d, s: _cell(_lrpid(d)),
           "lrpid", _lrpid, right=True),
    Column("CTIME", "when it was created or last changed (--raw: ISO 8601)",
           lambda d, s: time_text(d.obj.ctime, s)),
    Column("LAST", "its last use the kernel records (--raw: ISO 8601)",
           lambda d, s: time_text(d.obj.last_activity, s)),
    Column("TIMES", "", lambda d, s: "", "times",
           lambda d: {name: _iso(t) for name, t in d.obj.times}, listed=False),
    Column("VERDICT", "what ipcjanitor decided: stale, in-use, removed, ...",
           lambda d, s: d.verdict.value, "verdict", lambda d: d.verdict.value,
           "IPCJANITOR_VERDICT", paint=_paint),
    Column("REASON", "why (truncated to a terminal's width unless --notruncate)", _reason,
           "reason", lambda d: d.reason, "IPCJANITOR_REASON", flex=True),
)  # fmt: skip
DEFAULT = ("KIND", "KEY", "ID", "POLICY", "OWNER", "PERMS", "SIZE", "NSEMS", "MSGS", "NATTCH",
           "VERDICT", "REASON")  # fmt: skip


def _iso_ns(t: int) -> str:
    return datetime.fromtimestamp(t / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mq(get: Any) -> Any:
    return lambda d: get(d) if d.obj.kind is PosixKind.MQ else ABSENT


def _p_times(d: PosixDecision) -> dict[str, str]:
    o = d.obj
    return {"mtime": _iso_ns(o.mtime_ns), "ctime": _iso_ns(o.ctime_ns),
            "atime": _iso_ns(o.atime_ns)}  # fmt: skip


def _dev(d: PosixDecision) -> str:
    return f"{os.major(d.obj.dev)}:{os.minor(d.obj.dev)}"


_p_qnum = _mq(lambda d: d.obj.qnum)

# POSIX objects: NAME (escaped: anyone can name a file in /dev/shm) where System V has KEY and ID.
POSIX_COLUMNS: tuple[Column[PosixDecision], ...] = (
    Column("KIND", "posix-shm, posix-sem or posix-mq", lambda d, s: d.obj.kind.value,
           "kind", lambda d: d.obj.kind.value, "IPCJANITOR_KIND"),
    Column("NAME", "its name, escaped", lambda d, s: safe_name(d.obj.name),
           "name", lambda d: safe_name(d.obj.name), "IPCJANITOR_NAME"),
    Column("DEV", "the filesystem's device, major:minor", lambda d, s: _dev(d),
           "dev", _dev, "IPCJANITOR_DEV"),
    Column("INODE", "its inode", lambda d, s: str(d.obj.ino),
           "inode", lambda d: d.obj.ino, "IPCJANITOR_INODE", right=True),
    *OWNERSHIP,
    Column("PERMS", "permission bits, octal", lambda d, s: f"{d.obj.mode & 0o7777:o}",
           "perms", lambda d: f"{d.obj.mode & 0o7777:04o}"),
    Column("SIZE", "its size (--bytes: in bytes)", lambda d, s: size_text(d.obj.size, s),
           "size", lambda d: d.obj.size, right=True),
    Column("NLINK", "its links", lambda d, s: str(d.obj.nlink),
           "nlink", lambda d: d.obj.nlink, right=True),
    Column("MSGS", "messages queued (posix-mq)", lambda d, s: _cell(_p_qnum(d)),
           "qnum", _p_qnum, right=True),
    Column("TIMES", "", lambda d, s: "", "times", _p_times, listed=False),
    Column("MTIME", "when it was last written (--raw: ISO 8601)",
           lambda d, s: time_text(d.obj.mtime_ns / 1e9, s)),
    Column("HOLDERS", "the processes that hold it",
           lambda d, s: ", ".join(map(safe_name, d.holders)) or "-",
           "holders", lambda d: [safe_name(h) for h in d.holders]),
    Column("VERDICT", "what ipcjanitor decided: stale, in-use, removed, ...",
           lambda d, s: d.verdict.value, "verdict", lambda d: d.verdict.value,
           "IPCJANITOR_VERDICT", paint=_paint),
    Column("REASON", "why (truncated to a terminal's width unless --notruncate)",
           lambda d, s: safe_name(d.reason), "reason", lambda d: safe_name(d.reason),
           "IPCJANITOR_REASON", flex=True),
)  # fmt: skip
POSIX_DEFAULT = ("KIND", "NAME", "POLICY", "OWNER", "PERMS", "SIZE", "MSGS", "VERDICT", "REASON")


class View(NamedTuple):
    """How a run is printed: which columns (-o, None: the default), their Style, the legend
    (the header, the notes and the summary line: --no-legend drops all three)."""

    output: str | None = None
    style: Style = Style()
    legend: bool = True
    rows: bool = True  # False: the rows are told elsewhere (the hook's journal records)


def sysv_columns(output: str | None = None) -> tuple[Column[Decision], ...]:
    from .columns import choose  # noqa: PLC0415

    return choose(COLUMNS, DEFAULT, output)


def posix_columns(output: str | None = None) -> tuple[Column[PosixDecision], ...]:
    """-o for the POSIX table: the names it has (KEY and ID are System V's alone)."""
    from .columns import choose  # noqa: PLC0415

    names = {c.name for c in POSIX_COLUMNS if c.listed}
    sysv_only = {c.name for c in COLUMNS} - names
    if output:
        plus = output.startswith("+")
        asked = [n for n in output.lstrip("+").split(",") if n.strip().upper() not in sysv_only]
        output = ("+" if plus else "") + ",".join(asked) if asked or plus else None
    return choose(POSIX_COLUMNS, POSIX_DEFAULT, output)


def table(decisions: Sequence[Decision], view: View | None = None) -> str:
    view = view or View()
    return render(decisions, sysv_columns(view.output), view.style)


def posix_table(decisions: Sequence[PosixDecision], view: View | None = None) -> str:
    """POSIX objects: a NAME column where System V shows KEY and ID, made safe to print."""
    view = view or View()
    return render(decisions, posix_columns(view.output), view.style)


def object_json(d: Decision) -> dict[str, Any]:
    return as_json(d, COLUMNS)


def posix_json(d: PosixDecision) -> dict[str, Any]:
    return as_json(d, POSIX_COLUMNS)


def summary_line(decisions: Sequence[Decision | PosixDecision]) -> str:
    counts = Counter(d.verdict for d in decisions)
    parts = [f"{counts[v]} {v.value}" for v in Verdict if counts[v]]
    n = len(decisions)
    return f"{n} object{'s' if n != 1 else ''}" + (": " + ", ".join(parts) if parts else "")


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
    view: View | None = None,
) -> None:
    """Print a run: one JSON document, or the tables, their notes and the summary line."""
    if as_json:
        print(document(decisions, {**(extra or {}), "notes": list(notes)}, posix))
        return
    view = view or View()
    shown = not quiet and view.rows
    style = view.style._replace(headings=view.style.headings and view.legend)
    if shown and decisions:
        print(table(decisions, view._replace(style=style)))
    if shown and posix:
        if decisions and style.headings:
            print()
        print(posix_table(posix, view._replace(style=style)))
    if not view.legend:
        return
    if not quiet:
        for note in notes:
            print(f"note: {safe_name(note)}")
    print(summary_line([*decisions, *posix]))

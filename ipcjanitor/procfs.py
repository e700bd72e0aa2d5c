"""Read the kernel's System V IPC tables: /proc/sysvipc/* by header name, semctl for the rest."""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping
from pathlib import Path

from . import _sysvipc
from .errors import IpcJanitorError, ProcfsFormatError
from .model import IpcKind, IpcObject, PidRecord

TABLE_FILES = {IpcKind.SHM: "shm", IpcKind.SEM: "sem", IpcKind.MSG: "msg"}
_ID_COLUMN = {IpcKind.SHM: "shmid", IpcKind.SEM: "semid", IpcKind.MSG: "msqid"}
_COLUMNS = {
    IpcKind.SHM: (
        "key",
        "shmid",
        "perms",
        "size",
        "cpid",
        "lpid",
        "nattch",
        "uid",
        "gid",
        "cuid",
        "cgid",
        "atime",
        "dtime",
        "ctime",
    ),
    IpcKind.SEM: ("key", "semid", "perms", "nsems", "uid", "gid", "cuid", "cgid", "otime", "ctime"),
    IpcKind.MSG: (
        "key",
        "msqid",
        "perms",
        "cbytes",
        "qnum",
        "lspid",
        "lrpid",
        "uid",
        "gid",
        "cuid",
        "cgid",
        "stime",
        "rtime",
        "ctime",
    ),
}
# The field order of the C extension's *_stat tuples (see _sysvipc.pyi), id first.
_IDS = ("id", "key", "uid", "gid", "cuid", "cgid", "mode")
_SHM_STAT = (*_IDS, "size", "atime", "dtime", "ctime", "cpid", "lpid", "nattch")
_SEM_STAT = (*_IDS, "nsems", "otime", "ctime")
_MSG_STAT = (*_IDS, "cbytes", "qnum", "stime", "rtime", "ctime", "lspid", "lrpid")
# errnos meaning "this id is gone (or was reused) since the table was read"
VANISHED = frozenset({errno.EINVAL, errno.EIDRM})


def shm_object(f: Mapping[str, int]) -> IpcObject:
    return IpcObject(
        kind=IpcKind.SHM,
        id=f["id"],
        key=f["key"] & 0xFFFFFFFF,
        uid=f["uid"],
        gid=f["gid"],
        cuid=f["cuid"],
        cgid=f["cgid"],
        mode=f["mode"],
        size=f["size"],
        nattch=f["nattch"],
        pids=(PidRecord("creator", f["cpid"]), PidRecord("last shmat/shmdt", f["lpid"])),
        times=(("atime", f["atime"]), ("dtime", f["dtime"]), ("ctime", f["ctime"])),
    )


def sem_object(
    f: Mapping[str, int],
    sempids: tuple[int, ...] = (),
    ncnts: tuple[int, ...] = (),
    zcnts: tuple[int, ...] = (),
    unreadable: str | None = None,
) -> IpcObject:
    return IpcObject(
        kind=IpcKind.SEM,
        id=f["id"],
        key=f["key"] & 0xFFFFFFFF,
        uid=f["uid"],
        gid=f["gid"],
        cuid=f["cuid"],
        cgid=f["cgid"],
        mode=f["mode"],
        nsems=f["nsems"],
        ncnt=sum(ncnts),
        zcnt=sum(zcnts),
        pids=tuple(PidRecord(f"last semop on sem {i}", p) for i, p in enumerate(sempids)),
        times=(("otime", f["otime"]), ("ctime", f["ctime"])),
        unreadable=unreadable,
    )


def msg_object(f: Mapping[str, int]) -> IpcObject:
    return IpcObject(
        kind=IpcKind.MSG,
        id=f["id"],
        key=f["key"] & 0xFFFFFFFF,
        uid=f["uid"],
        gid=f["gid"],
        cuid=f["cuid"],
        cgid=f["cgid"],
        mode=f["mode"],
        qnum=f["qnum"],
        qbytes=f["cbytes"],
        pids=(PidRecord("last sender", f["lspid"]), PidRecord("last receiver", f["lrpid"])),
        times=(("stime", f["stime"]), ("rtime", f["rtime"]), ("ctime", f["ctime"])),
    )


def parse_rows(kind: IpcKind, text: str, source: str = "") -> Iterator[dict[str, int]]:
    """Yield each row of a /proc/sysvipc table as {column: int}, columns named by the header."""
    source = source or f"/proc/sysvipc/{TABLE_FILES[kind]}"
    lines = text.splitlines()
    if not lines:
        return
    header = lines[0].split()
    missing = [c for c in _COLUMNS[kind] if c not in header]
    if missing:
        raise ProcfsFormatError(source, 1, lines[0], f"header lacks {', '.join(missing)}")
    wanted = [(header.index(c), c) for c in _COLUMNS[kind]]
    for line_no, line in enumerate(lines[1:], start=2):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != len(header):
            raise ProcfsFormatError(
                source, line_no, line, f"{len(cells)} fields where the header names {len(header)}"
            )
        try:
            row = {c: int(cells[i], 8 if c == "perms" else 10) for i, c in wanted}
        except ValueError as exc:
            raise ProcfsFormatError(source, line_no, line, f"not a number ({exc})") from None
        row["id"] = row.pop(_ID_COLUMN[kind])
        row["mode"] = row.pop("perms")
        yield row


def parse_table(kind: IpcKind, text: str, source: str = "") -> list[IpcObject]:
    """Pure: objects of one /proc/sysvipc table (semaphore sets without per-semaphore facts)."""
    build = {IpcKind.SHM: shm_object, IpcKind.SEM: sem_object, IpcKind.MSG: msg_object}[kind]
    return [build(row) for row in parse_rows(kind, text, source)]


def _sem_with_details(row: dict[str, int]) -> IpcObject | None:
    try:
        key, *_rest, sempids, ncnts, zcnts = _sysvipc.sem_stat(row["id"])
    except OSError as exc:
        if exc.errno in VANISHED:
            return None
        return sem_object(row, unreadable=f"semctl on set {row['id']}: {exc.strerror}")
    if key != row["key"] & 0xFFFFFFFF:
        return None  # removed and the id reused between the table read and now: next run
    return sem_object(row, sempids, ncnts, zcnts)


def read_table_text(kind: IpcKind, procfs: Path) -> str:
    path = procfs / "sysvipc" / TABLE_FILES[kind]
    try:
        return path.read_text()
    except FileNotFoundError:
        if (procfs / "self").exists() and not (procfs / "sysvipc").exists():
            raise IpcJanitorError(
                f"{path} is missing: /proc is mounted with subset=pid or the kernel lacks "
                "CONFIG_SYSVIPC; ipcjanitor needs the full /proc (do not use ProcSubset=pid)"
            ) from None
        return ""


def read_objects(
    procfs: Path = Path("/proc"), kinds: frozenset[IpcKind] = frozenset(IpcKind)
) -> list[IpcObject]:
    """Every object of the current IPC namespace; objects that vanish mid-read are skipped."""
    objects: list[IpcObject] = []
    for kind in IpcKind:
        if kind not in kinds:
            continue
        text = read_table_text(kind, procfs)
        if kind is IpcKind.SEM:
            for row in parse_rows(kind, text):
                sem = _sem_with_details(row)
                if sem is not None:
                    objects.append(sem)
        else:
            objects.extend(parse_table(kind, text))
    return objects


def stat_object(kind: IpcKind, ipc_id: int) -> IpcObject | None:
    """Re-read one object by id through the kernel; None when it is gone. Raises OSError."""
    try:
        if kind is IpcKind.SHM:
            return shm_object(
                dict(zip(_SHM_STAT, (ipc_id, *_sysvipc.shm_stat(ipc_id)), strict=True))
            )
        if kind is IpcKind.SEM:
            *fields, sempids, ncnts, zcnts = _sysvipc.sem_stat(ipc_id)
            row = dict(zip(_SEM_STAT, (ipc_id, *fields), strict=True))
            return sem_object(row, sempids, ncnts, zcnts)
        return msg_object(dict(zip(_MSG_STAT, (ipc_id, *_sysvipc.msg_stat(ipc_id)), strict=True)))
    except OSError as exc:
        if exc.errno in VANISHED:
            return None
        raise

"""Read the kernel's System V IPC tables into IpcObjects.

Two sources give the same facts in the same shape (the C extension's stat tuples, see
_sysvipc.pyi): the kernel's *_STAT_ANY listing (Linux >= 4.17, the fast path), and
/proc/sysvipc/{shm,sem,msg} parsed by header name (older kernels, or an injected procfs root).
One builder per kind turns a tuple into an object, whichever source it came from.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import _sysvipc
from ..errors import IpcJanitorError, ProcfsFormatError
from ..model import IpcKind, IpcObject, PidRecord
from .procfs import LIVE, Procfs, of

TABLE_FILES = {IpcKind.SHM: "shm", IpcKind.SEM: "sem", IpcKind.MSG: "msg"}
# The C extension's stat tuples, field by field; /proc columns are mapped onto these names.
STAT_FIELDS = {
    IpcKind.SHM: ("key", "uid", "gid", "cuid", "cgid", "perms", "size", "atime", "dtime",
                  "ctime", "cpid", "lpid", "nattch"),
    IpcKind.SEM: ("key", "uid", "gid", "cuid", "cgid", "perms", "nsems", "otime", "ctime"),
    IpcKind.MSG: ("key", "uid", "gid", "cuid", "cgid", "perms", "cbytes", "qnum", "stime",
                  "rtime", "ctime", "lspid", "lrpid"),
}  # fmt: skip
_ID_COLUMN = {IpcKind.SHM: "shmid", IpcKind.SEM: "semid", IpcKind.MSG: "msqid"}
# errnos meaning "this id is gone (or was reused) since the table was read"
VANISHED = frozenset({errno.EINVAL, errno.EIDRM})
_SHM_ROLES = ("creator", "last shmat/shmdt")
_MSG_ROLES = ("last sender", "last receiver")
_SEM_ROLES = tuple(f"last semop on sem {i}" for i in range(256))


_new = tuple.__new__  # builds a record from positional fields at C speed (64k per run)
_PID_RECORDS: dict[tuple[str, int, bool], PidRecord] = {}


def _pid(role: str, pid: int, traced: bool) -> PidRecord:
    """One shared record per (role, pid, traced): a dead worker's objects repeat them."""
    rec = _PID_RECORDS.get((role, pid, traced))
    if rec is None:
        rec = _PID_RECORDS[(role, pid, traced)] = PidRecord(role, pid, traced)
    return rec


def shm_object(ipc_id: int, t: tuple[Any, ...]) -> IpcObject:
    key, uid, gid, cuid, cgid, mode, size, atime, dtime, ctime, cpid, lpid, nattch = t
    pids = (_pid(_SHM_ROLES[0], cpid, True), _pid(_SHM_ROLES[1], lpid, bool(atime or dtime)))
    times = (("atime", atime), ("dtime", dtime), ("ctime", ctime))
    return _new(IpcObject, (IpcKind.SHM, ipc_id, key, uid, gid, cuid, cgid, mode, size, 0, 0,
                            0, nattch, 0, 0, pids, (), times, max(atime, dtime, ctime), None,
                            t))  # fmt: skip


def _sem_role(i: int) -> str:
    return _SEM_ROLES[i] if i < len(_SEM_ROLES) else f"last semop on sem {i}"


def sem_object(ipc_id: int, t: tuple[Any, ...], unreadable: str | None = None) -> IpcObject:
    """t is the C extension's sem tuple; its last four fields are None when unreadable.

    A semaphore's pid is traced when its value is not 0: every set starts at 0, and whatever
    changed it (semop, SETVAL, SETALL) recorded its pid.
    """
    key, uid, gid, cuid, cgid, mode, nsems, otime, ctime, sempids, ncnts, zcnts, values = t
    pids: tuple[PidRecord, ...] = ()
    ncnt = zcnt = 0
    if sempids is None:
        values = ()
        if unreadable is None:
            unreadable = f"semctl GETPID on set {ipc_id}: permission denied"
    elif len(sempids) == 1:  # the common one-semaphore set, without the loop
        pids = (_pid(_SEM_ROLES[0], sempids[0], values[0] != 0),)
        ncnt, zcnt = ncnts[0], zcnts[0]
    else:
        pids = tuple(
            [
                _pid(_sem_role(i), p, v != 0)
                for i, (p, v) in enumerate(zip(sempids, values, strict=True))
            ]
        )
        ncnt, zcnt = sum(ncnts), sum(zcnts)
    times = (("otime", otime), ("ctime", ctime))
    return _new(IpcObject, (IpcKind.SEM, ipc_id, key, uid, gid, cuid, cgid, mode, 0, nsems, 0, 0,
                            None, ncnt, zcnt, pids, values, times, max(otime, ctime),
                            unreadable, t))  # fmt: skip


def msg_object(ipc_id: int, t: tuple[Any, ...]) -> IpcObject:
    key, uid, gid, cuid, cgid, mode, cbytes, qnum, stime, rtime, ctime, lspid, lrpid = t
    pids = (_pid(_MSG_ROLES[0], lspid, bool(stime)), _pid(_MSG_ROLES[1], lrpid, bool(rtime)))
    times = (("stime", stime), ("rtime", rtime), ("ctime", ctime))
    return _new(IpcObject, (IpcKind.MSG, ipc_id, key, uid, gid, cuid, cgid, mode, 0, 0, qnum,
                            cbytes, None, 0, 0, pids, (), times, max(stime, rtime, ctime), None,
                            t))  # fmt: skip


def parse_rows(kind: IpcKind, text: str, source: str = "") -> Iterator[tuple[int, tuple[int, ...]]]:
    """Yield (id, stat-shaped tuple) for each row of a /proc/sysvipc table, by header name."""
    source = source or f"/proc/sysvipc/{TABLE_FILES[kind]}"
    lines = text.splitlines()
    if not lines:
        return
    header = lines[0].split()
    wanted = ("key", _ID_COLUMN[kind], "perms", *STAT_FIELDS[kind][1:5], *STAT_FIELDS[kind][6:])
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ProcfsFormatError(source, 1, lines[0], f"header lacks {', '.join(missing)}")
    id_at = header.index(_ID_COLUMN[kind])
    columns = [(header.index(c), 8 if c == "perms" else 10) for c in STAT_FIELDS[kind]]
    for line_no, line in enumerate(lines[1:], start=2):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != len(header):
            raise ProcfsFormatError(
                source, line_no, line, f"{len(cells)} fields where the header names {len(header)}"
            )
        try:
            row = [int(cells[i], base) for i, base in columns]
            ipc_id = int(cells[id_at])
        except ValueError as exc:
            raise ProcfsFormatError(source, line_no, line, f"not a number ({exc})") from None
        row[0] &= 0xFFFFFFFF  # /proc prints the key signed
        yield ipc_id, tuple(row)


def parse_table(kind: IpcKind, text: str, source: str = "") -> list[IpcObject]:
    """Pure: the objects of one /proc/sysvipc table (semaphore sets without per-semaphore facts)."""
    if kind is IpcKind.SEM:
        return [sem_object(i, (*t, (), (), (), ())) for i, t in parse_rows(kind, text, source)]
    build = shm_object if kind is IpcKind.SHM else msg_object
    return [build(i, t) for i, t in parse_rows(kind, text, source)]


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


def _from_procfs(kind: IpcKind, procfs: Path) -> list[IpcObject]:
    text = read_table_text(kind, procfs)
    if kind is not IpcKind.SEM:
        return parse_table(kind, text)
    objects = []
    for ipc_id, row in parse_rows(kind, text):
        try:
            t = _sysvipc.sem_stat(ipc_id)
        except OSError as exc:
            if exc.errno in VANISHED:
                continue
            why = f"semctl on set {ipc_id}: {exc.strerror}"
            objects.append(sem_object(ipc_id, (*row, None, None, None, None), unreadable=why))
            continue
        if t[0] == row[0]:  # else removed and the id reused since the table read: next run
            objects.append(sem_object(ipc_id, t))
    return objects


_BUILD: dict[IpcKind, Callable[[int, tuple[Any, ...]], IpcObject]] = {
    IpcKind.SHM: shm_object,
    IpcKind.SEM: sem_object,
    IpcKind.MSG: msg_object,
}


def _from_kernel(kind: IpcKind) -> list[IpcObject]:
    build = _BUILD[kind]
    return [build(row[0], row[1:]) for row in _sysvipc.list_kind(kind.number)]  # type: ignore[arg-type]


def read_objects(
    procfs: Path | Procfs = LIVE, kinds: frozenset[IpcKind] = frozenset(IpcKind)
) -> list[IpcObject]:
    """Every object of the current IPC namespace; objects that vanish mid-read are skipped.
    The live kernel is asked first (*_STAT_ANY); a captured tree only through its tables."""
    proc = of(procfs)
    objects: list[IpcObject] = []
    for kind in IpcKind:
        if kind not in kinds:
            continue
        if proc.live:
            try:
                objects.extend(_from_kernel(kind))
                continue
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                # a kernel without *_STAT_ANY (before 4.17): read /proc instead
        objects.extend(_from_procfs(kind, proc.root))
    return objects


def build(kind: IpcKind, ipc_id: int, raw: tuple[Any, ...]) -> IpcObject:
    return _BUILD[kind](ipc_id, raw)

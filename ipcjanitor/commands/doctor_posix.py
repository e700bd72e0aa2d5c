"""doctor's POSIX rows: /dev/shm's fill against its size, the queues of /dev/mqueue against
fs.mqueue.queues_max, and each user's RLIMIT_MSGQUEUE charge.

A full /dev/shm is no clean error: a tmpfs allocates a page when it is first touched, so a
process writing into a mapping of a file there gets SIGBUS at that page fault, whatever
ftruncate promised. Each row says what `clean` would free now (the `stale` objects).

A queue charges its creator's user, at creation, its whole possible size (ipc/mqueue.c
mqueue_get_inode): mq_maxmsg * mq_msgsize, plus per message a struct msg_msg and per
priority in use (at most MQ_PRIO_MAX) a tree node. The next mq_open(O_CREAT) of that user
past its RLIMIT_MSGQUEUE fails with EMFILE; past queues_max (per IPC namespace, root with
CAP_SYS_RESOURCE excepted), with ENOSPC.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..kernel.posix import MQ_ROOT, SHM_ROOT, list_posix, mq_attr
from ..kernel.procfs import Unread, pids, read_text, status_field
from ..model import PosixKind, PosixObject
from .limits import LimitRow

MSG_MSG = 48  # sizeof(struct msg_msg) on a 64-bit kernel
TREE_NODE = 48  # sizeof(struct posix_msg_tree_node) on a 64-bit kernel
MQ_PRIO_MAX = 32768
_LIMIT_LINE = "Max msgqueue size"


def mq_charge(maxmsg: int, msgsize: int) -> int:
    """PURE: the bytes a queue charges its user's RLIMIT_MSGQUEUE (kernel >= 3.5)."""
    return maxmsg * msgsize + maxmsg * MSG_MSG + min(maxmsg, MQ_PRIO_MAX) * TREE_NODE


class ShmFs(NamedTuple):
    """/dev/shm as statvfs reads it."""

    size: int  # bytes
    used: int
    inodes: int  # 0: no limit (nr_inodes=0)
    inodes_used: int


def read_shmfs(root: Path = SHM_ROOT) -> ShmFs | None:
    try:
        v = os.statvfs(root)
    except OSError:
        return None
    return ShmFs(v.f_blocks * v.f_frsize, (v.f_blocks - v.f_bfree) * v.f_frsize,
                 v.f_files, v.f_files - v.f_ffree)  # fmt: skip


def shm_rows(fs: ShmFs, stale: Sequence[PosixObject] | None) -> list[LimitRow]:
    """PURE: /dev/shm's bytes and inodes against its size; stale: what clean removes now."""
    files = None if stale is None else [o for o in stale if o.kind is not PosixKind.MQ]
    freed = None if files is None else sum(o.blocks * 512 for o in files)
    count = None if files is None else len(files)
    return [
        LimitRow("posix-shm", "bytes", "/dev/shm size", fs.used, fs.size, freed),
        LimitRow("posix-shm", "inodes", "/dev/shm nr_inodes", fs.inodes_used, fs.inodes, count),
    ]


class Charge(NamedTuple):
    """One user's queues: what they charge, and the limit read from one of its processes."""

    uid: int
    bytes: int
    limit: int | None  # None: no process of the user to read it from; 0: unlimited
    stale: int  # of those bytes, the stale queues'


def mq_rows(
    queues: Sequence[PosixObject],
    queues_max: int | None,
    charges: Iterable[Charge],
    stale: Sequence[PosixObject] | None,
) -> list[LimitRow]:
    """PURE: the queues against queues_max, and each user's charge against its limit."""
    n_stale = None if stale is None else sum(1 for o in stale if o.kind is PosixKind.MQ)
    rows = []
    if queues_max is not None:
        rows.append(LimitRow("posix-mq", "queues", "fs.mqueue.queues_max", len(queues),
                             queues_max, n_stale))  # fmt: skip
    for c in sorted(charges):
        if not c.limit:  # not read, or unlimited
            continue
        freed = None if stale is None else c.stale
        what = f"bytes of uid {c.uid}"
        rows.append(LimitRow("posix-mq", what, "RLIMIT_MSGQUEUE", c.bytes, c.limit, freed))
    return rows


def _queues_max(procfs: Path) -> int | None:
    try:
        return int((procfs / "sys" / "fs" / "mqueue" / "queues_max").read_text())
    except (OSError, ValueError):
        return None


def _charges(
    root: Path, queues: Sequence[PosixObject]
) -> tuple[dict[int, int], dict[tuple[int, int], int], int]:
    """Per uid, the bytes its queues charge, keyed by identity too; and how many could not
    be read. Each queue is opened from the directory fd without following a link, and
    checked to be the inode listed."""
    by_uid: dict[int, int] = {}
    by_identity: dict[tuple[int, int], int] = {}
    unreadable = 0
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return by_uid, by_identity, len(queues)
    try:
        for q in queues:
            try:
                fd = os.open(q.entry, flags, dir_fd=dfd)
            except OSError:
                unreadable += 1
                continue
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != q.identity:
                    continue  # replaced since the listing: the new one is not counted
                maxmsg, msgsize, _ = mq_attr(fd)
            except (OSError, AttributeError):
                unreadable += 1
                continue
            finally:
                os.close(fd)
            by_identity[q.identity] = mq_charge(maxmsg, msgsize)
            by_uid[q.uid] = by_uid.get(q.uid, 0) + by_identity[q.identity]
    finally:
        os.close(dfd)
    return by_uid, by_identity, unreadable


def parse_limit(limits: str) -> int | None:
    """The soft RLIMIT_MSGQUEUE of /proc/PID/limits (0: unlimited), or None."""
    for line in limits.splitlines():
        if line.startswith(_LIMIT_LINE):
            soft = line[len(_LIMIT_LINE) :].split()[0]
            return 0 if soft == "unlimited" else int(soft) if soft.isdigit() else None
    return None


def user_limits(uids: Iterable[int], procfs: Path = Path("/proc")) -> dict[int, int]:
    """Per uid, the lowest soft RLIMIT_MSGQUEUE among its visible processes (real uid: the
    one whose charge the kernel counts); 0 when one of them is unlimited and none lower."""
    wanted = set(uids)
    found: dict[int, int] = {}
    if not wanted:
        return found
    for pid in pids(procfs):
        status = read_text(procfs, pid, "status")
        ids = [] if isinstance(status, Unread) else (status_field(status, "Uid") or "").split()
        if not ids or not ids[0].isdigit() or int(ids[0]) not in wanted:
            continue  # gone, hidden, or another user's (the real uid: the one charged)
        uid, limits = int(ids[0]), read_text(procfs, pid, "limits")
        try:
            limit = None if isinstance(limits, Unread) else parse_limit(limits)
        except ValueError:
            continue
        if limit is None:
            continue
        old = found.get(uid)
        found[uid] = limit if old is None else min(old, limit, key=lambda v: v or 2**63)
    return found


def posix_rows(
    stale: Sequence[PosixObject] | None,
    *,
    shm_root: Path = SHM_ROOT,
    mq_root: Path = MQ_ROOT,
    procfs: Path = Path("/proc"),
) -> tuple[list[LimitRow], list[str]]:
    """doctor's rows for /dev/shm and the queues, and notes on what could not be read."""
    notes: list[str] = []
    rows: list[LimitRow] = []
    fs = read_shmfs(shm_root)
    if fs is None:
        notes.append(f"{shm_root} cannot be read: its fill is unknown")
    else:
        rows += shm_rows(fs, stale)
    listing = list_posix(frozenset({PosixKind.MQ}), procfs, shm_root, mq_root)
    notes += [f"queues: {n}" for n in listing.notes]
    if listing.notes and not listing.objects:
        return rows, notes
    queues = list(listing.objects)
    by_uid, by_identity, unreadable = _charges(mq_root, queues)
    if unreadable:
        notes.append(
            f"the size of {unreadable} queue(s) could not be read (run doctor as root): "
            "their users' RLIMIT_MSGQUEUE charge is not shown"
        )
    limits = user_limits(by_uid, procfs)
    for uid in sorted(set(by_uid) - set(limits)):
        notes.append(f"no process of uid {uid} to read its RLIMIT_MSGQUEUE from: not shown")
    stale_ids = {o.identity for o in stale or () if o.kind is PosixKind.MQ}
    charges = [
        Charge(uid, total, limits.get(uid),
               sum(b for i, b in by_identity.items() if i in stale_ids and _uid(queues, i) == uid))
        for uid, total in by_uid.items()
    ]  # fmt: skip
    rows += mq_rows(queues, _queues_max(procfs), charges, stale)
    return rows, notes


def _uid(queues: Sequence[PosixObject], identity: tuple[int, int]) -> int:
    return next(q.uid for q in queues if q.identity == identity)

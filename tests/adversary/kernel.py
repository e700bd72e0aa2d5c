"""What the kernel says, read by the harness without touching anything: the System V tables,
each semaphore's pid, value and waiters, and where a process sleeps.

Nothing here attaches, maps, opens or operates on an IPC object (the harness must hold
nothing, or it would itself keep objects alive): /proc/sysvipc and semctl's read-only
commands, which record no pid.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import NamedTuple

LIBC = ctypes.CDLL(None, use_errno=True)
GETPID, GETVAL, GETNCNT, GETZCNT = 11, 12, 14, 15

# x86_64 system call numbers of the calls a worker blocks in
SEMOP_CALLS = frozenset({65, 220})  # semop, semtimedop (glibc's semop)
MSGSND, MSGRCV = 69, 70
MQ_SEND, MQ_RECV = 242, 243  # mq_timedsend, mq_timedreceive
FUTEX = 202  # sem_wait


class Shm(NamedTuple):
    key: int
    nattch: int
    cpid: int
    lpid: int


class Sem(NamedTuple):
    key: int
    nsems: int


class Msg(NamedTuple):
    key: int
    cbytes: int
    qnum: int
    lspid: int
    lrpid: int


def _rows(table: str) -> list[list[int]]:
    lines = Path(f"/proc/sysvipc/{table}").read_text().splitlines()[1:]
    return [[int(f) for f in line.split()] for line in lines]


def shm_table() -> dict[int, Shm]:
    # key shmid perms size cpid lpid nattch ...
    return {r[1]: Shm(r[0] & 0xFFFFFFFF, r[6], r[4], r[5]) for r in _rows("shm")}


def sem_table() -> dict[int, Sem]:
    # key semid perms nsems ...
    return {r[1]: Sem(r[0] & 0xFFFFFFFF, r[3]) for r in _rows("sem")}


def msg_table() -> dict[int, Msg]:
    # key msqid perms cbytes qnum lspid lrpid ...
    return {r[1]: Msg(r[0] & 0xFFFFFFFF, r[3], r[4], r[5], r[6]) for r in _rows("msg")}


class SemState(NamedTuple):
    pids: tuple[int, ...]
    values: tuple[int, ...]
    ncnt: int
    zcnt: int


def sem_state(semid: int, nsems: int) -> SemState | None:
    """Each semaphore's last pid and value, and the waiters of the set (None: it is gone)."""
    pids, values, ncnt, zcnt = [], [], 0, 0
    for num in range(nsems):
        got = [int(LIBC.semctl(semid, num, cmd)) for cmd in (GETPID, GETVAL, GETNCNT, GETZCNT)]
        if -1 in got:
            return None
        pids.append(got[0])
        values.append(got[1])
        ncnt += got[2]
        zcnt += got[3]
    return SemState(tuple(pids), tuple(values), ncnt, zcnt)


def sleeping_in(pid: int, calls: frozenset[int], tid: int | None = None) -> bool | None:
    """True: the task (the leader, or thread tid) is asleep in one of the calls; False: it
    is not (running, or elsewhere); None: gone."""
    task = f"/proc/{pid}/task/{tid or pid}"
    try:
        state = Path(f"{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
        call = Path(f"{task}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return None
    if state in ("Z", "X"):
        return None
    return state in ("S", "D") and call.isdigit() and int(call) in calls


def gone(pid: int) -> bool:
    """No process has the pid any more (exited and reaped)."""
    return not os.path.exists(f"/proc/{pid}")


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return False


def inode(path: str) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_ino
    except OSError:
        return None

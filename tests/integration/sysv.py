"""Test-only helpers: make real System V objects from real processes, kill them with SIGKILL.

Everything here runs inside `unshare --ipc` (see harness.py); never in the host namespace.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
IPC_CREAT, IPC_EXCL, IPC_NOWAIT = 0o1000, 0o2000, 0o4000
GETNCNT, SETVAL = 14, 16


class SemBuf(ctypes.Structure):
    _fields_ = [
        ("sem_num", ctypes.c_ushort),
        ("sem_op", ctypes.c_short),
        ("sem_flg", ctypes.c_short),
    ]


def _check(rc: int, what: str) -> int:
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def shmget(key: int, size: int = 4096, mode: int = 0o600) -> int:
    return _check(
        libc.shmget(ctypes.c_int32(key if key < 2**31 else key - 2**32), size, IPC_CREAT | mode),
        "shmget",
    )


def shmat(shmid: int) -> int:
    addr = libc.shmat(shmid, None, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "shmat")
    return int(addr)


def semget(key: int, nsems: int = 1, mode: int = 0o600) -> int:
    return _check(
        libc.semget(ctypes.c_int32(key if key < 2**31 else key - 2**32), nsems, IPC_CREAT | mode),
        "semget",
    )


def semop(semid: int, num: int, op: int, flags: int = 0) -> None:
    buf = SemBuf(num, op, flags)
    _check(libc.semop(semid, ctypes.byref(buf), 1), "semop")


def semctl(semid: int, num: int, cmd: int, val: int = 0) -> int:
    return _check(libc.semctl(semid, num, cmd, val), "semctl")


def msgget(key: int, mode: int = 0o600) -> int:
    return _check(
        libc.msgget(ctypes.c_int32(key if key < 2**31 else key - 2**32), IPC_CREAT | mode), "msgget"
    )


def msgsnd(msqid: int, text: bytes = b"hello") -> None:
    buf = ctypes.create_string_buffer(8 + len(text))
    ctypes.c_long.from_buffer(buf).value = 1
    ctypes.memmove(ctypes.addressof(buf) + 8, text, len(text))
    _check(libc.msgsnd(msqid, buf, len(text), 0), "msgsnd")


def spawn(body: Callable[[], object], block: bool = False) -> int:
    """Fork a real process that runs body() and then lives until killed; wait until it is ready.

    With block=True, body() is expected to block (e.g. a semop wait) and readiness is
    signalled before calling it.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if block:
                os.write(w, b"r")
                body()
            else:
                body()
                os.write(w, b"r")
            while True:
                signal.pause()
        finally:
            os._exit(1)
    os.close(w)
    if os.read(r, 1) != b"r":
        raise RuntimeError("child failed before becoming ready")
    os.close(r)
    return pid


def run_and_exit(body: Callable[[], object]) -> int:
    """A short-lived real process: runs body() and exits; returns its pid once reaped."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
            os._exit(0)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"child {pid} failed: status {status}")
    return pid


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def ncnt(semid: int, num: int = 0) -> int:
    return semctl(semid, num, GETNCNT)


def msgrcv(msqid: int, size: int = 8192, flags: int = 0) -> int:
    """Receive one message (blocking unless flags say otherwise); returns its length."""
    buf = ctypes.create_string_buffer(8 + size)
    return _check(libc.msgrcv(msqid, buf, size, 0, flags), "msgrcv")


def msg_fill(msqid: int) -> int:
    """Send until the queue is full (its msg_qbytes reached); returns the messages sent."""
    sent = 0
    while True:
        buf = ctypes.create_string_buffer(8 + 1024)
        ctypes.c_long.from_buffer(buf).value = 1
        if libc.msgsnd(msqid, buf, 1024, IPC_NOWAIT) == -1:
            return sent
        sent += 1


def blocked_in(pid: int, call_nr: int, tid: int | None = None) -> bool:
    """Whether the task is asleep in the given system call (x86_64 numbers)."""
    path = f"/proc/{pid}/task/{tid or pid}/syscall"
    try:
        with open(path) as f:
            return f.read().split()[0] == str(call_nr)
    except (OSError, IndexError):
        return False


MSGSND_NR, MSGRCV_NR = 69, 70  # x86_64

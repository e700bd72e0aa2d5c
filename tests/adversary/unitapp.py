"""A unit's process under the contained systemd (units.py): it makes (an app) or opens (a
holder) app N's objects, System V and POSIX, holds them, and checks them every 50 ms.

`python3 unitapp.py app N DIR` runs as adv-appN.service: it creates or reopens by key and
name a segment (attached), a semaphore set and a queue (it operates on both), a POSIX
segment (fd and mapping), a POSIX semaphore and a queue (open), and one segment no owner
claims. `python3 unitapp.py holder N DIR` runs in a unit of its own and attaches, maps or
opens whatever of app N's attachable objects exist (a segment, the POSIX three): the
leftovers' holder after the app's unit stops.

What it holds is written to DIR/ROLE-N-PID.ready once each holding is verified (the key or
name still names the object it holds); from then on, a held object that loses its name
(IPC_RMID, unlink) or answers EIDRM/EINVAL is a line in DIR/lost.log: the janitor removed
what a live process held. Runs as a plain script in the container (no project imports).
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import sys
import time
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.shmat.restype = ctypes.c_void_p
LIBC.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]  # fmt: skip
LIBC.sem_open.restype = ctypes.c_void_p
LIBC.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
LIBC.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
IPC_CREAT, IPC_NOWAIT = 0o1000, 0o4000
BASE, FREE = 0x7A200000, 0x7B200000
GONE = (errno.EIDRM, errno.EINVAL)


def keys(n: int) -> dict[str, int]:
    return {"shm": BASE + 16 * n, "sem": BASE + 16 * n + 1, "msg": BASE + 16 * n + 2}


def names(n: int) -> dict[str, str]:
    return {"posix-shm": f"unit{n}-shm", "posix-sem": f"unit{n}-sem", "posix-mq": f"unit{n}-mq"}


def path(kind: str, name: str) -> str:
    if kind == "posix-mq":
        return f"/dev/mqueue/{name}"
    return f"/dev/shm/sem.{name}" if kind == "posix-sem" else f"/dev/shm/{name}"


class SemBuf(ctypes.Structure):
    _fields_ = [("num", ctypes.c_ushort), ("op", ctypes.c_short), ("flg", ctypes.c_short)]


def _key(k: int) -> ctypes.c_int32:
    return ctypes.c_int32(k if k < 2**31 else k - 2**32)


def shm_key_of(shmid: int) -> int | None:
    """The key the segment shmid has now (0 once removed while attached), None: gone."""
    with open("/proc/sysvipc/shm") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if int(fields[1]) == shmid:
                return int(fields[0]) & 0xFFFFFFFF
    return None


def ino(p: str) -> int | None:
    try:
        return os.stat(p).st_ino
    except OSError:
        return None


class Holder:
    def __init__(self, role: str, n: int) -> None:
        self.role, self.n = role, n
        self.held: dict[str, Any] = {}  # kind -> what check() needs
        self.lost: list[dict[str, Any]] = []

    def take(self) -> None:
        create = self.role == "app"
        flag = IPC_CREAT | 0o600 if create else 0
        for kind, key in keys(self.n).items():
            if kind != "shm" and not create:
                continue  # a queue or set is held by its recorded pid only: the app's
            k = _key(key)
            if kind == "shm":
                ident = int(LIBC.shmget(k, 4096, flag))
            elif kind == "sem":
                ident = int(LIBC.semget(k, 1, flag))
            else:
                ident = int(LIBC.msgget(k, flag))
            if ident < 0:
                continue
            if kind == "shm":
                addr = LIBC.shmat(ident, None, 0)
                if addr in (None, ctypes.c_void_p(-1).value):
                    continue
                ctypes.memset(addr, 0x5A, 8)
                if shm_key_of(ident) != key:  # removed before or as it attached: not held
                    continue
            self.held[kind] = ident
        if create:
            LIBC.shmat(LIBC.shmget(_key(FREE + self.n), 4096, IPC_CREAT | 0o600), None, 0)
        for kind, name in names(self.n).items():
            self._take_posix(kind, name, create)

    def _take_posix(self, kind: str, name: str, create: bool) -> None:
        p = path(kind, name)
        mine: int | None
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            if kind == "posix-shm":
                fd = os.open(p, flags, 0o600)
                os.ftruncate(fd, 4096)
                self.held["_map"] = mmap.mmap(fd, 4096)
                self.held["_map"][:8] = b"adv-unit"
                mine = os.fstat(fd).st_ino
            elif kind == "posix-mq":
                fd = LIBC.mq_open(b"/" + name.encode(), flags, 0o600, None)
                if fd < 0:
                    return
                mine = os.fstat(fd).st_ino
            else:
                before = ino(p)
                sem = LIBC.sem_open(b"/" + name.encode(), os.O_CREAT if create else 0, 0o600, 0)
                if not sem or sem == ctypes.c_void_p(-1).value:
                    return
                mine = ino(p) if create else before
                self.held["_sem"] = sem
        except OSError:
            return
        if mine is not None and ino(p) == mine:
            self.held[kind] = (p, mine)

    def check(self) -> None:
        for kind, what in list(self.held.items()):
            why = None
            if kind == "shm" and shm_key_of(what) != keys(self.n)["shm"]:
                why = "its key no longer names the attached segment (IPC_RMID)"
            elif kind == "sem":
                ops = (SemBuf * 2)(SemBuf(0, 1, IPC_NOWAIT), SemBuf(0, -1, IPC_NOWAIT))
                if LIBC.semop(what, ops, 2) < 0 and ctypes.get_errno() in GONE:
                    why = f"semop: {errno.errorcode[ctypes.get_errno()]}"
            elif kind == "msg":
                buf = ctypes.create_string_buffer(256)
                if LIBC.msgctl(what, 2, buf) < 0 and ctypes.get_errno() in GONE:  # IPC_STAT
                    why = f"msgctl IPC_STAT: {errno.errorcode[ctypes.get_errno()]}"
            elif kind.startswith("posix") and ino(what[0]) != what[1]:
                why = f"{what[0]} no longer names the open file (unlinked)"
            if why is not None:
                self.lost.append({"role": self.role, "n": self.n, "pid": os.getpid(),
                                  "kind": kind, "why": why, "at": time.time()})  # fmt: skip
                del self.held[kind]


def main() -> None:
    role, n, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    h = Holder(role, n)
    h.take()
    held = sorted(k for k in h.held if not k.startswith("_"))
    ready = f"{where}/{role}-{n}-{os.getpid()}.ready"
    with open(ready + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "held": held}, f)
    os.rename(ready + ".tmp", ready)
    while True:
        time.sleep(0.05)
        h.check()
        if h.lost:
            with open(f"{where}/lost.log", "a") as f:
                f.writelines(json.dumps(x) + "\n" for x in h.lost)
            h.lost.clear()


if __name__ == "__main__":
    main()

"""One simulated program of the adversarial harness: a real process that makes and uses IPC
objects on command, and reports every result, IPC errors included.

`python worker.py LABEL SOCKET`: connects to the harness's Unix socket, says hello with its
pid, then runs one JSON command per line and answers one JSON line per command. Blocking
commands (a semop that must wait, msgrcv on an empty queue, ...) answer when the call returns.
Only ever run inside the private namespaces of tests/adversary/outside.py.

Everything a command makes lives in this process under a handle the harness names, so the
harness knows exactly which process holds what: attachments, mappings, open fds.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import signal
import socket
import sys
import threading
from queue import Queue
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.shmat.restype = ctypes.c_void_p
LIBC.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
LIBC.shmdt.argtypes = [ctypes.c_void_p]
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]  # fmt: skip
LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
LIBC.sem_open.restype = ctypes.c_void_p
LIBC.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
LIBC.sem_post.argtypes = [ctypes.c_void_p]
LIBC.sem_wait.argtypes = [ctypes.c_void_p]
LIBC.sem_trywait.argtypes = [ctypes.c_void_p]
LIBC.sem_close.argtypes = [ctypes.c_void_p]
LIBC.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
LIBC.mq_send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint]
LIBC.mq_receive.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
LIBC.mq_receive.restype = ctypes.c_ssize_t
LIBC.pthread_exit.argtypes = [ctypes.c_void_p]

IPC_CREAT, IPC_EXCL, IPC_NOWAIT, IPC_RMID = 0o1000, 0o2000, 0o4000, 0
SEM_UNDO, SETVAL, MSG_NOERROR = 0x1000, 16, 0o10000
PAGE = 4096
FAILED = ctypes.c_void_p(-1).value


class SemBuf(ctypes.Structure):
    _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short),
                ("sem_flg", ctypes.c_short)]  # fmt: skip


class IpcError(Exception):
    def __init__(self, what: str, err: int | None = None) -> None:
        self.err = ctypes.get_errno() if err is None else err
        super().__init__(what)


def _rc(rc: int, what: str) -> int:
    if rc == -1:
        raise IpcError(what)
    return rc


def _ptr(p: int | None, what: str) -> int:
    if p in (None, 0, FAILED):
        raise IpcError(what)
    assert p is not None
    return p


def _key(k: int) -> ctypes.c_int32:
    return ctypes.c_int32(k if k < 2**31 else k - 2**32)


class Worker:
    def __init__(self) -> None:
        self.shm: dict[str, int] = {}  # handle -> address of a shmat
        self.fds: dict[str, int] = {}  # handle -> fd (posix-shm files, posix mq descriptors)
        self.maps: dict[str, int] = {}  # handle -> address of an mmap of a posix-shm file
        self.sems: dict[str, int] = {}  # handle -> sem_t* of sem_open

    # System V ---------------------------------------------------------------------------
    def shm_create(self, key: int) -> int:
        return _rc(LIBC.shmget(_key(key), PAGE, IPC_CREAT | IPC_EXCL | 0o600), "shmget")

    def shm_at(self, id: int, h: str) -> int:
        addr = _ptr(LIBC.shmat(id, None, 0), "shmat")
        ctypes.memset(addr, 0x5A, 16)  # it is usable memory
        self.shm[h] = addr
        return 0

    def shm_dt(self, h: str) -> int:
        return _rc(LIBC.shmdt(ctypes.c_void_p(self.shm.pop(h))), "shmdt")

    def touch(self) -> int:
        for addr in [*self.shm.values(), *self.maps.values()]:
            ctypes.memset(addr, 0x33, 8)
        return 0

    def sem_create(self, key: int, nsems: int) -> int:
        return _rc(LIBC.semget(_key(key), nsems, IPC_CREAT | IPC_EXCL | 0o600), "semget")

    def semop(self, id: int, num: int, delta: int, undo: bool, nowait: bool) -> int:
        flags = (SEM_UNDO if undo else 0) | (IPC_NOWAIT if nowait else 0)
        buf = SemBuf(num, delta, flags)
        return _rc(LIBC.semop(id, ctypes.byref(buf), 1), "semop")

    def setval(self, id: int, num: int, val: int) -> int:
        return _rc(LIBC.semctl(id, num, SETVAL, ctypes.c_int(val)), "semctl SETVAL")

    def msg_create(self, key: int) -> int:
        return _rc(LIBC.msgget(_key(key), IPC_CREAT | IPC_EXCL | 0o600), "msgget")

    def msgsnd(self, id: int, size: int, nowait: bool) -> int:
        buf = ctypes.create_string_buffer(8 + size)
        ctypes.c_long.from_buffer(buf).value = 1
        return _rc(LIBC.msgsnd(id, buf, size, IPC_NOWAIT if nowait else 0), "msgsnd")

    def msgfill(self, id: int) -> int:
        """Send without waiting until the queue is full; how many were sent."""
        sent = 0
        while True:
            buf = ctypes.create_string_buffer(8 + 1024)
            ctypes.c_long.from_buffer(buf).value = 1
            if LIBC.msgsnd(id, buf, 1024, IPC_NOWAIT) == -1:
                err = ctypes.get_errno()
                if err != errno.EAGAIN:
                    raise IpcError("msgsnd", err)
                return sent
            sent += 1

    def msgrcv(self, id: int, nowait: bool) -> int:
        buf = ctypes.create_string_buffer(8 + 65536)
        flags = MSG_NOERROR | (IPC_NOWAIT if nowait else 0)
        return _rc(LIBC.msgrcv(id, buf, 65536, 0, flags), "msgrcv")

    def rmid(self, kind: str, id: int) -> int:
        if kind == "shm":
            return _rc(LIBC.shmctl(id, IPC_RMID, None), "shmctl IPC_RMID")
        if kind == "sem":
            return _rc(LIBC.semctl(id, 0, IPC_RMID), "semctl IPC_RMID")
        return _rc(LIBC.msgctl(id, IPC_RMID, None), "msgctl IPC_RMID")

    # POSIX ------------------------------------------------------------------------------
    def pshm_open(self, name: str, h: str, create: bool) -> int:
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            fd = os.open(f"/dev/shm/{name}", flags, 0o600)
            if create:
                os.ftruncate(fd, PAGE)
        except OSError as exc:
            raise IpcError(f"open /dev/shm/{name}", exc.errno) from None
        self.fds[h] = fd
        return 0

    def pshm_map(self, name: str, h: str) -> int:
        """A mapping without an fd: open, mmap(2), close."""
        try:
            fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
        except OSError as exc:
            raise IpcError(f"open /dev/shm/{name}", exc.errno) from None
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        addr = LIBC.mmap(None, PAGE, prot, mmap.MAP_SHARED, fd, 0)
        os.close(fd)
        self.maps[h] = _ptr(addr, "mmap")
        ctypes.memset(self.maps[h], 0x11, 16)
        return 0

    def unmap(self, h: str) -> int:
        return _rc(LIBC.munmap(ctypes.c_void_p(self.maps.pop(h)), PAGE), "munmap")

    def close(self, h: str) -> int:
        os.close(self.fds.pop(h))
        return 0

    def psem_open(self, name: str, h: str, create: bool) -> int:
        flags = os.O_CREAT | os.O_EXCL if create else 0
        self.sems[h] = _ptr(LIBC.sem_open(b"/" + name.encode(), flags, 0o600, 0), "sem_open")
        return 0

    def psem_post(self, h: str) -> int:
        return _rc(LIBC.sem_post(ctypes.c_void_p(self.sems[h])), "sem_post")

    def psem_wait(self, h: str, nowait: bool) -> int:
        call = LIBC.sem_trywait if nowait else LIBC.sem_wait
        return _rc(call(ctypes.c_void_p(self.sems[h])), "sem_wait")

    def psem_close(self, h: str) -> int:
        return _rc(LIBC.sem_close(ctypes.c_void_p(self.sems.pop(h))), "sem_close")

    def mq_open(self, name: str, h: str, create: bool) -> int:
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        q = LIBC.mq_open(b"/" + name.encode(), flags, 0o600, None)
        self.fds[h] = _rc(q, "mq_open")
        return 0

    def mq_send(self, h: str) -> int:
        return _rc(LIBC.mq_send(self.fds[h], b"m", 1, 0), "mq_send")

    def mq_recv(self, h: str) -> int:
        buf = ctypes.create_string_buffer(65536)
        return int(_rc(LIBC.mq_receive(self.fds[h], buf, 65536, None), "mq_receive"))

    def unlink(self, kind: str, name: str) -> int:
        if kind == "posix-mq":
            return _rc(LIBC.mq_unlink(b"/" + name.encode()), "mq_unlink")
        path = f"/dev/shm/sem.{name}" if kind == "posix-sem" else f"/dev/shm/{name}"
        try:
            os.unlink(path)
        except OSError as exc:
            raise IpcError(f"unlink {path}", exc.errno) from None
        return 0


def _connect(path: str, label: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall((json.dumps({"hello": label, "pid": os.getpid()}) + "\n").encode())
    return sock


def _fork(state: dict[str, Any], label: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: its own channel; what it inherited (attachments, maps, fds) stays
        state["rfile"].close()  # the makefile holds the socket open until it is closed too
        state["sock"].close()
        state["sock"] = _connect(state["path"], label)
        state["rfile"] = state["sock"].makefile("r")
        raise _Forked
    return pid


class _Forked(Exception):
    """Unwinds the child of a fork back to the command loop, with nothing to answer."""


def _answer(sock: socket.socket, doc: dict[str, Any]) -> None:
    sock.sendall((json.dumps(doc) + "\n").encode())


def _run(worker: Worker, state: dict[str, Any], cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd.pop("op")
    try:
        if op == "fork":
            return {"ok": True, "v": _fork(state, cmd["label"])}
        return {"ok": True, "v": getattr(worker, op)(**cmd)}
    except IpcError as exc:
        return {"ok": False, "errno": exc.err, "err": errno.errorcode.get(exc.err, "?"),
                "what": str(exc)}  # fmt: skip


def _leader_exit(worker: Worker, state: dict[str, Any]) -> None:
    """The main thread ends (pthread_exit), another goes on serving: the process lives on
    with a zombie thread-group leader, the way a C daemon's main() may end."""
    tids: Queue[int] = Queue()

    def go_on() -> None:
        tids.put(threading.get_native_id())
        serve(worker, state)

    threading.Thread(target=go_on).start()
    _answer(state["sock"], {"ok": True, "v": tids.get()})
    LIBC.pthread_exit(None)


def serve(worker: Worker, state: dict[str, Any]) -> None:
    while True:
        line = state["rfile"].readline()
        if not line:
            os._exit(0)  # the harness is gone
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            os._exit(0)
        if cmd["op"] == "leader_exit":
            _leader_exit(worker, state)
        try:
            reply = _run(worker, state, cmd)
        except _Forked:
            continue
        _answer(state["sock"], reply)


def main() -> None:
    label, path = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped at once: their pids free
    sock = _connect(path, label)
    serve(Worker(), {"sock": sock, "path": path, "rfile": sock.makefile("r")})


if __name__ == "__main__":
    main()

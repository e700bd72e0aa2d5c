"""Real programs that make and use POSIX IPC objects, run by posix_scenarios.py.

`python posix_progs.py HOW NAME`: make or open the object NAME, hold it the way HOW says,
print "ready" and wait to be killed. Only ever run inside the private namespaces of
harness.in_namespace(posix=True).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
import sys
import time

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.sem_open.restype = ctypes.c_void_p
LIBC.sem_open.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_uint)
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
LIBC.sem_wait.argtypes = (ctypes.c_void_p,)
LIBC.sem_post.argtypes = (ctypes.c_void_p,)
LIBC.mq_open.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)


def check(ok: bool, what: str) -> None:
    if not ok:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def shm_fd(name: str) -> int:
    return os.open(f"/dev/shm/{name}", os.O_RDWR | os.O_CREAT, 0o600)


def mapped(name: str) -> object:
    """A mapping without an fd: mmap(2) itself (Python's mmap keeps a dup of the fd), then
    the fd closed."""
    fd = shm_fd(name)
    os.ftruncate(fd, 4096)
    addr = LIBC.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    check(addr not in (None, ctypes.c_void_p(-1).value), "mmap")
    os.close(fd)
    return addr


def lock_sh(name: str) -> object:
    """The DPDK/vLLM pattern: LOCK_SH on the object for its whole life."""
    fd = shm_fd(name)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def dpdk(name: str) -> object:
    """A DPDK-style process: each of NAME's memory files (NAME_0, NAME_1) made or opened,
    mapped, written and unmapped again, and LOCK_SH held on its fd for its whole life."""
    fds = []
    for i in range(2):
        fd = shm_fd(f"{name}_{i}")
        os.ftruncate(fd, 4096)
        with mmap.mmap(fd, 4096) as m:
            m[:4] = b"page"
        fcntl.flock(fd, fcntl.LOCK_SH)
        fds.append(fd)
    return fds


def ofd_lock(name: str) -> object:
    fd = shm_fd(name)
    flock = struct.pack("hh4xqqi4x", fcntl.F_RDLCK, 0, 0, 0, 0)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
    return fd


def sem(name: str, value: int = 1) -> object:
    """A glibc named semaphore in use: sem_open maps /dev/shm/sem.NAME."""
    s = LIBC.sem_open(b"/" + name.encode(), os.O_CREAT, 0o600, value)
    check(s not in (None, 0, ctypes.c_void_p(-1).value), "sem_open")
    return s


def sem_waiter(name: str) -> object:
    """One end of a semaphore two processes share: sem_wait, and a line "woke N" for each
    post, for ever (a JACK client waiting for its turn)."""
    s = sem(name, 0)  # created at 0 when it is the first: it waits for a post
    print("ready", flush=True)
    woke = 0
    while True:
        check(LIBC.sem_wait(s) == 0, "sem_wait")
        woke += 1
        print(f"woke {woke}", flush=True)


def sem_poster(name: str) -> object:
    """The other end: open the same semaphore, post it once, and keep it open."""
    s = sem(name)
    check(LIBC.sem_post(s) == 0, "sem_post")
    return s


def mq(name: str, messages: int = 0) -> int:
    q = LIBC.mq_open(b"/" + name.encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
    check(q >= 0, "mq_open")
    for i in range(messages):
        check(LIBC.mq_send(q, f"m{i}".encode(), 2, 0) == 0, "mq_send")
    return int(q)


def mq_reader(name: str) -> object:
    """A live reader blocked in mq_receive."""
    q = mq(name)
    print("ready", flush=True)
    buf = ctypes.create_string_buffer(8192)
    LIBC.mq_receive(q, buf, 8192, None)
    return q


def shared_memory(name: str) -> object:
    from multiprocessing import shared_memory

    return shared_memory.SharedMemory(name=name, create=True, size=4096)


HOW = {
    "mapped": mapped,
    "fd": shm_fd,
    "lock_sh": lock_sh,
    "dpdk": dpdk,
    "ofd": ofd_lock,
    "sem": sem,
    "sem_waiter": sem_waiter,
    "sem_poster": sem_poster,
    "mq": mq,
    "mq_data": lambda name: mq(name, 3),
    "mq_reader": mq_reader,
    "shared_memory": shared_memory,
}


def main() -> None:
    held = HOW[sys.argv[1]](sys.argv[2])
    print("ready", flush=True)
    while held is not None:
        time.sleep(60)


if __name__ == "__main__":
    main()

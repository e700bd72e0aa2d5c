"""Tasks blocked in msgrcv/msgsnd, by the queue they wait on: the kernel counts no queue waiters.

A semaphore set counts its waiters (GETNCNT/GETZCNT) and a segment its attaches (nattch), but a
message queue keeps no such count: a process blocked for ever in msgrcv() on an empty queue
leaves no trace in the queue's record. The only place it shows is the task itself:
/proc/PID/task/TID/syscall names the system call a sleeping task is blocked in and its
arguments, the first of which is the msqid. Every thread is read, since any thread may block.

Reading another user's syscall file needs ptrace access (CAP_SYS_PTRACE); a task that cannot be
read, or an architecture whose numbers are not known here, leaves the scan blind, and then no
queue is ever `stale`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

MSGSND, MSGRCV = "msgsnd", "msgrcv"
_IPC_CALLS = {11: MSGSND, 12: MSGRCV}  # the ipc(2) multiplexer's call numbers (linux/ipc.h)
_X32_BIT = 0x40000000

# Per machine: the direct system call numbers of msgsnd/msgrcv (native, and of 32-bit tasks
# the kernel also runs), and the ipc(2) multiplexer's, whose first argument says which call.
# A wrongly matched number can only keep a queue, never remove one.
_DIRECT: dict[str, dict[int, str]] = {
    # x86_64 native 69/70; i386 tasks 400/401
    "x86_64": {69: MSGSND, 70: MSGRCV, 400: MSGSND, 401: MSGRCV},
    "i686": {400: MSGSND, 401: MSGRCV},
    "i386": {400: MSGSND, 401: MSGRCV},
    # the generic table (arm64, riscv64, loongarch64); arm32 tasks on arm64: 301/302
    "aarch64": {189: MSGSND, 188: MSGRCV, 301: MSGSND, 302: MSGRCV},
    "riscv64": {189: MSGSND, 188: MSGRCV},
    "loongarch64": {189: MSGSND, 188: MSGRCV},
}
_MULTIPLEXER: dict[str, int] = {"x86_64": 117, "i686": 117, "i386": 117}


class QueueWaiters(NamedTuple):
    waiters: Mapping[int, tuple[str, ...]]  # msqid -> "pid 812 (thread 813) blocked in msgrcv"
    blind: str | None  # why a waiter could have escaped the scan; None when every task was read


def parse_syscall(text: str, machine: str) -> tuple[str, int] | None:
    """(call, msqid) when a /proc/.../syscall line shows a task blocked in msgsnd/msgrcv."""
    fields = text.split()
    if len(fields) < 4 or not fields[0].lstrip("-").isdigit():
        return None  # "running", or blocked outside a system call ("-1 sp pc")
    nr = int(fields[0]) & ~_X32_BIT
    try:
        args = [int(a, 16) for a in fields[1:4]]
    except ValueError:
        return None
    call = _DIRECT.get(machine, {}).get(nr)
    if call is not None:
        return call, args[0] & 0xFFFFFFFF
    if nr == _MULTIPLEXER.get(machine) and args[0] & 0xFFFF in _IPC_CALLS:
        return _IPC_CALLS[args[0] & 0xFFFF], args[1] & 0xFFFFFFFF
    return None


def queue_waiters(procfs: Path = Path("/proc"), machine: str | None = None) -> QueueWaiters:
    """Every task of every visible process blocked in msgsnd/msgrcv, by msqid."""
    machine = machine or os.uname().machine
    if machine not in _DIRECT:
        return QueueWaiters(
            {}, f"the system call numbers of msgrcv/msgsnd on {machine} are not known"
        )
    found: dict[int, list[str]] = {}
    unreadable: list[str] = []
    for entry in os.scandir(procfs):
        if not entry.name.isdigit():
            continue
        try:
            tids = os.listdir(os.path.join(entry.path, "task"))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH):
                unreadable.append(f"pid {entry.name} ({exc.strerror})")
            continue
        for tid in tids:
            try:
                fd = os.open(os.path.join(entry.path, "task", tid, "syscall"), os.O_RDONLY)
                try:
                    text = os.read(fd, 512).decode("ascii", "replace")
                finally:
                    os.close(fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ESRCH):
                    unreadable.append(f"pid {entry.name} thread {tid} ({exc.strerror})")
                continue
            hit = parse_syscall(text, machine)
            if hit is not None:
                who = f"pid {entry.name}" + (f" (thread {tid})" if tid != entry.name else "")
                found.setdefault(hit[1], []).append(f"{who} is blocked in {hit[0]} on it")
    blind = None
    if unreadable:
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        blind = f"cannot read what {', '.join(unreadable[:3])}{more} is blocked in"
    return QueueWaiters({q: tuple(w) for q, w in found.items()}, blind)

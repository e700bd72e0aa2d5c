"""Tasks blocked in msgrcv/msgsnd, by the queue they wait on: the kernel counts no queue waiters.

A semaphore set counts its waiters (GETNCNT/GETZCNT) and a segment its attaches (nattch), but a
message queue keeps no such count: a process blocked for ever in msgrcv() on an empty queue
leaves no trace in the queue's record. The only place it shows is the task itself:
/proc/PID/task/TID/syscall names the system call a sleeping task is blocked in and its
arguments, the first of which is the msqid. Every thread is read, since any thread may block.

Reading another user's syscall file needs ptrace access (CAP_SYS_PTRACE); a task that cannot be
read, or an architecture whose numbers are not known here, leaves the scan blind, and then no
queue is ever `stale`.

The one table of system call numbers: the msg rule's, learn's (semop) and doctor's (a pipe
writer asleep in write/writev/splice/vmsplice/tee), and the one call made here, kcmp(2)
(holders.py: whether a thread's fd table is its leader's). A 32-bit (compat) task on a
64-bit machine reports its own table's numbers; is_compat tells it from its executable's
ELF class.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import NamedTuple

from ..model import Pid
from .procfs import Procfs, Unread, pids, task_syscalls

MSGSND, MSGRCV = "msgsnd", "msgrcv"
SEMOP, SEMTIMEDOP = "semop", "semtimedop"  # learn's: a task waiting on a semaphore set
WRITE, WRITEV, SPLICE, VMSPLICE, TEE = "write", "writev", "splice", "vmsplice", "tee"
IPC = "ipc"  # the ipc(2) multiplexer: its first argument says which call
_IPC_CALLS = {11: MSGSND, 12: MSGRCV}  # the ipc(2) multiplexer's call numbers (linux/ipc.h)
_X32_BIT = 0x40000000
# Of each call a pipe writer sleeps in, the argument that is the fd written to.
PIPE_WRITES = {WRITE: 0, WRITEV: 0, VMSPLICE: 0, SPLICE: 2, TEE: 1}
ELFCLASS32, ELFCLASS64 = 1, 2


class Table(NamedTuple):
    """A machine's system call numbers (asm/unistd.h) of the calls read here: its own, and
    those of the 32-bit tasks its kernel also runs (compat), which /proc/.../syscall shows
    as they are: an i386 task on x86_64 in write(2) shows 4, which is stat(2) natively."""

    native: Mapping[int, str]
    compat: Mapping[int, str]
    elf_class: int  # of the machine's own programs
    queues: bool = True  # whether msgsnd/msgrcv are known (the msg rule's numbers)


_I386 = {
    4: WRITE,
    146: WRITEV,
    313: SPLICE,
    315: TEE,
    316: VMSPLICE,
    400: MSGSND,
    401: MSGRCV,
    117: IPC,
}
_GENERIC = {64: WRITE, 66: WRITEV, 75: VMSPLICE, 76: SPLICE, 77: TEE}  # asm-generic/unistd.h
_GENERIC |= {188: MSGRCV, 189: MSGSND, 192: SEMTIMEDOP, 193: SEMOP}
_ARM32 = {4: WRITE, 146: WRITEV, 340: SPLICE, 342: TEE, 343: VMSPLICE, 301: MSGSND, 302: MSGRCV}
_PPC = {4: WRITE, 146: WRITEV, 283: SPLICE, 284: TEE, 285: VMSPLICE}  # its 32-bit tasks alike
_S390 = {4: WRITE, 146: WRITEV, 306: SPLICE, 308: TEE, 309: VMSPLICE}
# A wrongly matched number can only keep a queue, never remove one; doctor's second witness
# is wchan (the task sleeps waiting for room in a pipe).
_SYSCALLS: dict[str, Table] = {
    # x86_64's own, with x32's writev/vmsplice (512 and up: x32 tasks only, X32 bit set)
    "x86_64": Table(
        {
            1: WRITE,
            20: WRITEV,
            65: SEMOP,
            69: MSGSND,
            70: MSGRCV,
            220: SEMTIMEDOP,
            275: SPLICE,
            276: TEE,
            278: VMSPLICE,
            516: WRITEV,
            532: VMSPLICE,
        },
        _I386,
        ELFCLASS64,
    ),
    "i686": Table(_I386, {}, ELFCLASS32),
    "i386": Table(_I386, {}, ELFCLASS32),
    # the generic table (arm64, riscv64, loongarch64); arm32 tasks on arm64
    "aarch64": Table(_GENERIC, _ARM32, ELFCLASS64),
    "riscv64": Table(_GENERIC, {}, ELFCLASS64),
    "loongarch64": Table(_GENERIC, {}, ELFCLASS64),
    "ppc64le": Table(_PPC, _PPC, ELFCLASS64, queues=False),
    "s390x": Table(_S390, _S390, ELFCLASS64, queues=False),
}


PIPE_WRITE_MACHINES = frozenset(_SYSCALLS)


def knows(machine: str, call: str) -> bool:
    """Whether the machine's own numbers of that call are known here."""
    table = _SYSCALLS.get(machine)
    return table is not None and call in table.native.values()


class Call(NamedTuple):
    name: str
    args: tuple[int, ...]  # the first six, as the kernel gives them


def blocked_call(text: str, machine: str, compat: bool | None = None) -> Call | None:
    """The call a /proc/.../syscall line shows a task blocked in, when the table knows it.

    compat: the task runs 32-bit code (see is_compat); None when not known, and then its
    own machine's numbers are tried first.
    """
    fields = text.split()
    table = _SYSCALLS.get(machine)
    if table is None or len(fields) < 4 or not fields[0].lstrip("-").isdigit():
        return None  # "running", or blocked outside a system call ("-1 sp pc")
    nr = int(fields[0])
    if nr & _X32_BIT and machine == "x86_64":
        nr, compat = nr & ~_X32_BIT, False  # an x32 task: the 64-bit table
    try:
        args = tuple(int(a, 16) for a in fields[1:7])
    except ValueError:
        return None
    name = table.native.get(nr) if compat is not True else None
    if name is None and compat is not False:
        name = table.compat.get(nr)
    return None if name is None else Call(name, args)


def parse_syscall(text: str, machine: str) -> tuple[str, int] | None:
    """(call, msqid) when a /proc/.../syscall line shows a task blocked in msgsnd/msgrcv."""
    call = blocked_call(text, machine)
    if call is None or not _SYSCALLS[machine].queues:
        return None
    if call.name in (MSGSND, MSGRCV):
        return call.name, call.args[0] & 0xFFFFFFFF
    if call.name == IPC and call.args[0] & 0xFFFF in _IPC_CALLS:
        return _IPC_CALLS[call.args[0] & 0xFFFF], call.args[1] & 0xFFFFFFFF
    return None


def pipe_write(text: str, machine: str, compat: bool | None = None) -> tuple[str, int] | None:
    """(call, fd) when the line shows a write(2), writev(2), splice(2), vmsplice(2) or tee(2):
    the fd is the one written to (splice's and tee's output)."""
    call = blocked_call(text, machine, compat)
    if call is None or call.name not in PIPE_WRITES or len(call.args) <= PIPE_WRITES[call.name]:
        return None
    return call.name, call.args[PIPE_WRITES[call.name]] & 0xFFFFFFFF


def elf_class(exe: Path) -> int | None:
    """EI_CLASS of an executable: 1 for 32-bit, 2 for 64-bit; None if not ELF or unreadable."""
    try:
        with exe.open("rb") as f:
            head = f.read(5)
    except OSError:
        return None
    return head[4] if len(head) == 5 and head[:4] == b"\x7fELF" else None


def is_compat(exe: Path, machine: str) -> bool | None:
    """Whether a process (its /proc/PID/exe) runs the 32-bit numbers of a 64-bit machine;
    None when its executable cannot be read. (A 64-bit program making int $0x80 calls is not
    told apart: it is read as native.)"""
    found = elf_class(exe)
    table = _SYSCALLS.get(machine)
    if found is None or table is None:
        return None
    return found != table.elf_class and bool(table.compat)


class QueueWaiters(NamedTuple):
    waiters: Mapping[int, tuple[str, ...]]  # msqid -> "pid 812 (thread 813) blocked in msgrcv"
    blind: str | None  # why a waiter could have escaped the scan; None when every task was read


def queue_waiters(procfs: Path = Path("/proc"), machine: str | None = None) -> QueueWaiters:
    """Every task of every visible process blocked in msgsnd/msgrcv, by msqid."""
    machine = machine or os.uname().machine
    if machine not in _SYSCALLS or not _SYSCALLS[machine].queues:
        return QueueWaiters(
            {}, f"the system call numbers of msgrcv/msgsnd on {machine} are not known"
        )
    found: dict[int, list[str]] = {}
    unreadable: list[str] = []
    for pid in pids(procfs):
        for tid, text in task_syscalls(procfs, pid):
            if isinstance(text, Unread):
                thread = f" thread {tid}" if tid else ""
                unreadable.append(f"pid {pid}{thread} ({text.why})")
                continue
            hit = parse_syscall(text, machine)
            if hit is not None:
                who = f"pid {pid}" + (f" (thread {tid})" if tid != str(pid) else "")
                found.setdefault(hit[1], []).append(f"{who} is blocked in {hit[0]} on it")
    blind = None
    if unreadable:
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        blind = f"cannot read what {', '.join(unreadable[:3])}{more} is blocked in"
    return QueueWaiters({q: tuple(w) for q, w in found.items()}, blind)


_KCMP_FILES = 2  # linux/kcmp.h
# kcmp(2)'s number, for 64-bit processes only (a 32-bit one on a 64-bit kernel would need its
# compat table's: it is told nothing, and every thread's table is read instead)
_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272, "loongarch64": 272, "ppc64le": 354,
         "ppc64": 354, "s390x": 343}  # fmt: skip


@cache
def _kcmp_call() -> Callable[[int, int], int | None] | None:
    """kcmp(pid1, pid2, KCMP_FILES) through libc's syscall(), or None where its number is
    not known here; imported only when a process with several threads is met."""
    import ctypes  # noqa: PLC0415

    number = _KCMP.get(os.uname().machine) if ctypes.sizeof(ctypes.c_void_p) == 8 else None
    if number is None:
        return None
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long

    def kcmp(a: int, b: int) -> int | None:
        args = (ctypes.c_long(number), ctypes.c_long(a), ctypes.c_long(b))
        got = int(syscall(*args, ctypes.c_long(_KCMP_FILES), ctypes.c_long(0), ctypes.c_long(0)))
        return None if got < 0 else got

    return kcmp


def same_fd_table(procfs: Procfs, a: Pid | int, b: Pid | int) -> bool | None:
    """Whether tasks a and b (tids, as the live kernel's /proc names them) share one fd table:
    kcmp(2) KCMP_FILES, which needs ptrace read access to both (root: CAP_SYS_PTRACE). None
    when it cannot tell: a captured tree, a /proc of another pid namespace than ours (its
    tids are not ours to pass), no kcmp here (ENOSYS, seccomp's EPERM, an unknown machine),
    either task gone or not ours to compare."""
    if not procfs.live or not _own_pid_namespace(procfs.root, os.getpid()):
        return None
    kcmp = _kcmp_call()
    got = None if kcmp is None else kcmp(a, b)
    return None if got is None else got == 0


@cache
def _own_pid_namespace(root: Path, me: int) -> bool:
    """The live procfs names our own pid as we know it: its tids are the ones kcmp takes."""
    try:
        return os.readlink(f"{os.fspath(root)}/self") == str(me)
    except OSError:
        return False

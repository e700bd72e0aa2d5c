"""The facts ipcjanitor reads and the verdicts it reaches, as immutable typed records.

Records are NamedTuples rather than frozen dataclasses: as immutable and typed, four times
cheaper to build (0.7 us against 2.6 us, measured; a run builds several per IPC object), and
importing them does not pull in `dataclasses` -> `inspect` -> `ast` (12 ms of every start).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

Pid = int
IpcId = int
Key = int  # unsigned 32-bit, as ipcs prints it
Seconds = int  # epoch seconds; 0 means "never" in the kernel's tables
# Object times are whole seconds, and so is the boot time a process's start is counted from
BASE_REUSE_MARGIN = 2.0


class IpcKind(enum.Enum):
    """The three System V IPC kinds, in the order the C extension numbers them."""

    SHM = "shm"
    SEM = "sem"
    MSG = "msg"

    # Members are singletons compared by identity: identity hashing is correct, and C-fast
    # (Enum's own __hash__ is Python code, called per object per dict lookup).
    __hash__ = object.__hash__

    @property
    def number(self) -> int:
        return _KIND_NUMBERS[self]


_KIND_NUMBERS = {IpcKind.SHM: 0, IpcKind.SEM: 1, IpcKind.MSG: 2}


class PidRecord(NamedTuple):
    """One pid an object records, with what the kernel says it did."""

    role: str  # "creator", "last shmat/shmdt", "last semop on sem 2", "last sender", ...
    pid: Pid  # 0: none recorded, or hidden from our pid namespace
    # The object itself shows that the act which records this pid happened (a creator always;
    # last shmat/shmdt: atime or dtime set; last sender: stime; last receiver: rtime; a
    # semaphore: its value is not 0). A zero pid beside such a trace is a hidden pid, never
    # "none". True by default: the safe assumption for a record built without that knowledge.
    traced: bool = True


class IpcObject(NamedTuple):
    """One shm segment, semaphore set or message queue, as read from the kernel."""

    kind: IpcKind
    id: IpcId
    key: Key
    uid: int
    gid: int
    cuid: int
    cgid: int
    mode: int  # permission bits as /proc/sysvipc prints them (octal there)
    # shm: size in bytes; sem: number of semaphores; msg: messages queued
    size: int = 0
    nsems: int = 0
    qnum: int = 0
    qbytes: int = 0
    nattch: int | None = None  # shm only
    ncnt: int = 0  # sem: processes waiting for an increase, summed over semaphores
    zcnt: int = 0  # sem: processes waiting for zero, summed over semaphores
    pids: tuple[PidRecord, ...] = ()
    values: tuple[int, ...] = ()  # sem: each semaphore's value (semctl GETALL)
    # Every timestamp the kernel keeps for this kind, by name (atime, dtime, ctime, otime, ...)
    times: tuple[tuple[str, Seconds], ...] = ()
    # The newest of those: what idle time counts from (the builders in procfs.py compute it)
    last_activity: Seconds = 0
    # Why some facts could not be read (e.g. semctl GETPID denied); None when all were read
    unreadable: str | None = None
    # The kernel's own record (the C extension's stat tuple) the object was built from, so a
    # re-read compares whole; None for objects built another way (tests)
    raw: tuple[object, ...] | None = None

    @property
    def ctime(self) -> Seconds:
        return dict(self.times).get("ctime", 0)

    @property
    def never_used(self) -> bool:
        """The object's own record proves nobody ever used it (so a zero pid means "none"):
        a segment never attached (atime and dtime 0), a queue never sent to or read from
        (stime and rtime 0), a set never operated on (otime 0 and every value 0)."""
        if self.unreadable:
            return False
        names = _USE_TIMES[self.kind]
        return not any(t for name, t in self.times if name in names) and not any(self.values)

    def facts(self) -> tuple[object, ...]:
        """Everything a re-check compares: identity, ownership and every liveness fact."""
        return (self.key, self.uid, self.cuid, self.times, self.nattch, self.ncnt, self.zcnt,
                self.qnum, self.pids, self.values)  # fmt: skip


_USE_TIMES = {
    IpcKind.SHM: frozenset({"atime", "dtime"}),
    IpcKind.SEM: frozenset({"otime"}),
    IpcKind.MSG: frozenset({"stime", "rtime"}),
}
_EMPTY: Mapping[Any, Any] = MappingProxyType({})  # an immutable default for the mappings below


class Presence(enum.Enum):
    """What /proc says about one pid."""

    ABSENT = "absent"  # no process has it
    PRESENT = "present"  # a process has it; its start time is known
    ZOMBIE = "zombie"  # exited, waiting to be reaped: it can never touch an object again
    HIDDEN = "hidden"  # a process has it but we may not read it (hidepid, EACCES)


class ProcessInfo(NamedTuple):
    presence: Presence
    start_time: float | None = None  # epoch seconds, from boot time + start ticks
    detail: str = ""  # why HIDDEN


class UnitState(enum.Enum):
    RUNNING = "running"  # at least one process other than ipcjanitor is in its cgroup
    STOPPED = "stopped"  # no process in it, and we can see every process
    UNKNOWN = "unknown"  # we cannot see every process


class HostFacts(NamedTuple):
    """What the process table says, gathered once per run for the pids and units asked."""

    processes: Mapping[Pid, ProcessInfo] = _EMPTY
    units: Mapping[str, UnitState] = _EMPTY
    # Why a zero pid without a trace of its act may still hide a live process (we run outside
    # the host's pid namespace); None when such a zero means "none recorded"
    hidden_pids: str | None = None
    # Why some processes may be invisible to us (hidepid, a nested pid namespace): a unit that
    # shows no process then proves nothing; None when we see every process
    blind: str | None = None
    # Tasks blocked in msgrcv/msgsnd, by the msqid they wait on (the kernel counts no queue
    # waiters): a description of each. None: tasks were not inspected
    queue_waiters: Mapping[IpcId, tuple[str, ...]] | None = None
    # Why a task blocked on a queue may have escaped inspection; None when every task was read
    queue_blind: str | None = None
    # What systemd said about a pid (the hook's ExecMainPID): its start time, if known, and a note
    pid_notes: Mapping[Pid, tuple[float | None, str]] = _EMPTY
    # How much later than an object's newest timestamp a process must have started to be
    # taken for a younger holder of a reused pid: clock granularity, widened by how far the
    # wall clock stands ahead of the lowest offset in the record of its steps (clock.py)
    reuse_margin: float = BASE_REUSE_MARGIN
    # Units the policy names by an alias: that name -> the name systemd runs the unit under
    unit_names: Mapping[str, str] = _EMPTY
    # Processes that started at or after this (epoch seconds, counted as start_time is) did so
    # while every step of the wall clock was recorded: only for them does a start after the
    # object's time prove PID reuse. None: for no process (clock.coverage)
    clock_covered_from: float | None = None
    # Why steps before clock_covered_from (or, when it is None, any step) may be unrecorded
    clock_gap: str = "the clock's steps were not looked at"


class Verdict(enum.Enum):
    __hash__ = object.__hash__

    UNOWNED = "unowned"
    YOUNG = "young"
    IN_USE = "in-use"
    HOLDS_DATA = "holds-data"
    UNKNOWN = "unknown"
    STALE = "stale"
    REMOVED = "removed"
    CHANGED = "changed"
    FAILED = "failed"


class Decision(NamedTuple):
    """One object, the owner that claims it (if any), its verdict and why."""

    obj: IpcObject
    owner: str | None
    verdict: Verdict
    reason: str


class PosixKind(enum.Enum):
    """The POSIX IPC kinds: files of /dev/shm and queues of the mqueue filesystem."""

    SHM = "posix-shm"  # a regular file under /dev/shm, at any depth, except sem.* at its top
    SEM = "posix-sem"  # /dev/shm/sem.NAME: a glibc named semaphore
    MQ = "posix-mq"  # a queue of the mqueue filesystem of our IPC namespace

    __hash__ = object.__hash__


class PosixObject(NamedTuple):
    """One POSIX shm file, named semaphore or message queue, as stat read it (never by path:
    identity is (dev, ino), and a name can be replaced at any moment)."""

    kind: PosixKind
    name: str  # as the policy matches it: "app/buf0"; a semaphore's or queue's NAME
    dev: int
    ino: int
    uid: int
    gid: int
    mode: int  # st_mode, file type included
    size: int
    nlink: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    # the directories from the walk's root to the object's own, as (name, dev, ino): the
    # removal walks the same way and checks each step ("", dev, ino) is the root itself
    parents: tuple[tuple[str, int, int], ...]
    entry: str  # the object's name in its directory ("sem.x", "buf0")
    qnum: int | None = None  # posix-mq: messages queued (mq_getattr); None elsewhere
    unreadable: str | None = None  # why a fact could not be read

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    @property
    def last_activity(self) -> float:
        """The newest of mtime and ctime (mmap bumps only atime: never judge by it)."""
        return max(self.mtime_ns, self.ctime_ns) / 1e9

    def facts(self) -> tuple[object, ...]:
        """What the re-check before removal compares with the scan."""
        return (self.dev, self.ino, self.ctime_ns, self.mtime_ns, self.size, self.nlink)


class PosixDecision(NamedTuple):
    """One POSIX object, the owner that claims it (if any), its verdict, why, and its holders."""

    obj: PosixObject
    owner: str | None
    verdict: Verdict
    reason: str
    holders: tuple[str, ...] = ()

# key, uid, gid, cuid, cgid, mode, size, atime, dtime, ctime, cpid, lpid, nattch
def shm_stat(
    shmid: int, /
) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]: ...

# key, uid, gid, cuid, cgid, mode, nsems, otime, ctime, sempids, ncnts, zcnts, values
def sem_stat(
    semid: int, /
) -> tuple[
    int,
    int,
    int,
    int,
    int,
    int,
    int,
    int,
    int,
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
]: ...

# key, uid, gid, cuid, cgid, mode, cbytes, qnum, stime, rtime, ctime, lspid, lrpid
def msg_stat(
    msqid: int, /
) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]: ...
def rmid(kind: int, ipc_id: int, /) -> None: ...

# Every object of kind 0 shm, 1 sem, 2 msg: (id, *the *_stat tuple of that kind); for a sem set
# whose semaphores may not be read, the last four fields are None. OSError(EINVAL) before 4.17.
def list_kind(kind: int, /) -> list[tuple[object, ...]]: ...

# For each (id, raw) of one kind: re-read by id, IPC_RMID only if the record still equals raw.
# One outcome each: None removed, ("stat", errno), ("changed", new raw), ("rmid", errno).
def recheck_rmid(
    kind: int, items: list[tuple[int, tuple[object, ...]]], /
) -> list[tuple[str, object] | None]: ...

# the build machine's <sys/syscall.h> numbers of the calls kernel/tasks.py reads
SYSCALLS: dict[str, int]

# key, uid, gid, cuid, cgid, mode, size, atime, dtime, ctime, cpid, lpid, nattch
def shm_stat(
    shmid: int, /
) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]: ...

# key, uid, gid, cuid, cgid, mode, nsems, otime, ctime, sempids, ncnts, zcnts
def sem_stat(
    semid: int, /
) -> tuple[
    int, int, int, int, int, int, int, int, int, tuple[int, ...], tuple[int, ...], tuple[int, ...]
]: ...

# key, uid, gid, cuid, cgid, mode, cbytes, qnum, stime, rtime, ctime, lspid, lrpid
def msg_stat(
    msqid: int, /
) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]: ...
def rmid(kind: int, ipc_id: int, /) -> None: ...

"""kernel/holders.py against a fake procfs: maps, fds and /proc/locks matched by (dev, ino)."""

from __future__ import annotations

import os
from pathlib import Path

from ipcjanitor.kernel import holders


def dev_text(dev: int) -> str:
    return f"{os.major(dev):02x}:{os.minor(dev):02x}"


def fake_proc(
    tmp: Path, pid: int, comm: str, maps: str = "", fds: dict[str, str] | None = None
) -> None:
    base = tmp / "proc" / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "comm").write_text(comm + "\n")
    (base / "maps").write_text(maps)
    for fd, target in (fds or {}).items():
        (base / "fd" / fd).symlink_to(target)


def test_mappings_fds_and_locks_name_pids_and_how(tmp_path: Path) -> None:
    obj = tmp_path / "psm_1"
    obj.write_bytes(b"")
    other = tmp_path / "other"
    other.write_bytes(b"")
    st, ost = obj.stat(), other.stat()
    d = dev_text(st.st_dev)
    fake_proc(
        tmp_path,
        812,
        "php-fpm",
        f"7f00-7f01 rw-s 00000000 {d} {st.st_ino}    /dev/shm/psm_1\n"
        f"7f01-7f02 rw-s 00000000 {d} {st.st_ino}    /dev/shm/psm_1\n"
        f"7f02-7f03 r--p 00000000 {d} {ost.st_ino}    /x/other\n"
        "7f03-7f04 rw-p 00000000 00:00 0 \n",
    )
    fake_proc(tmp_path, 90, "worker", fds={"3": "socket:[123]", "7": str(obj), "8": str(other)})
    (tmp_path / "proc" / "locks").write_text(
        f"1: FLOCK  ADVISORY  READ  4410 {d}:{st.st_ino} 0 EOF\n"
        f"1: -> FLOCK  ADVISORY  WRITE 4411 {d}:{st.st_ino} 0 EOF\n"
        f"2: OFDLCK ADVISORY  READ  -1 {d}:{st.st_ino} 0 EOF\n"
        f"3: POSIX  ADVISORY  WRITE 77 {d}:{ost.st_ino} 0 EOF\n"
        f"4: FLOCK  ADVISORY  WRITE 5 {d}:{st.st_ino} 0 EOF\n"  # excluded: ourselves
    )
    found, unreadable, read = holders.scan_holders(
        [(st.st_dev, st.st_ino)], tmp_path / "proc", exclude={5}
    )
    assert unreadable == [] and read == 2
    assert sorted(found[(st.st_dev, st.st_ino)]) == sorted(
        [
            "mapped by pid 812 (php-fpm)",
            "fd 7 of pid 90 (worker)",
            "LOCK_SH by pid 4410",
            "waiting for LOCK_EX: pid 4411",
            "OFD read lock by pid -1 (an OFD lock: whoever holds that open file)",
        ]
    )
    assert list(found) == [(st.st_dev, st.st_ino)]


def test_same_inode_on_another_device_is_no_holder(tmp_path: Path) -> None:
    obj = tmp_path / "a"
    obj.write_bytes(b"")
    st = obj.stat()
    fake_proc(tmp_path, 1, "x", f"7f00-7f01 rw-s 00000000 ff:ee {st.st_ino} /dev/shm/a\n")
    (tmp_path / "proc" / "locks").write_text("")
    found, _, _ = holders.scan_holders([(st.st_dev, st.st_ino)], tmp_path / "proc")
    assert found == {}


def test_unreadable_processes_are_blindness(tmp_path: Path) -> None:
    obj = tmp_path / "a"
    obj.write_bytes(b"")
    st = obj.stat()
    for pid in range(10, 15):
        fake_proc(tmp_path, pid, "x")
        (tmp_path / "proc" / str(pid) / "maps").unlink()
        (tmp_path / "proc" / str(pid) / "maps").mkdir()  # reading it fails: EISDIR
    (tmp_path / "proc" / "locks").write_text("")
    h = holders.read_holders([(st.st_dev, st.st_ino)], tmp_path / "proc")
    assert h.by_identity == {}
    assert h.blind is not None
    assert "cannot read the maps or fds of pid 10 (Is a directory)" in h.blind
    assert "and 2 more: a holder there would be missed" in h.blind


def test_a_process_gone_meanwhile_holds_nothing_and_blinds_nothing(tmp_path: Path) -> None:
    obj = tmp_path / "a"
    obj.write_bytes(b"")
    st = obj.stat()
    (tmp_path / "proc" / "33").mkdir(parents=True)  # no maps, no fd: exited
    (tmp_path / "proc" / "locks").write_text("")
    (tmp_path / "proc" / "self" / "ns").mkdir(parents=True)  # a capture in the host's pid ns
    (tmp_path / "proc" / "self" / "ns" / "pid").symlink_to("pid:[4026531836]")
    h = holders.read_holders([(st.st_dev, st.st_ino)], tmp_path / "proc")
    assert (h.by_identity, h.blind, h.processes) == ({}, None, 0)


def test_nothing_wanted_reads_nothing(tmp_path: Path) -> None:
    assert holders.scan_holders([], tmp_path / "missing") == ({}, [], 0)


def test_missing_locks_file_is_blindness(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    h = holders.read_holders([(1, 2)], tmp_path / "proc")
    assert h.blind is not None and "locks" in h.blind


def test_a_live_thread_of_an_ended_leader_holds_what_it_maps_and_opens(tmp_path: Path) -> None:
    """main() called pthread_exit, another thread runs on: the zombie leader's maps and fd
    are empty, the live thread's /proc/PID/task/TID/ show the mapping and the fd (found by
    the adversarial harness: tests/adversary/regressions/leader-exited-posix-holder.json)."""
    mapped, opened = tmp_path / "sem.a", tmp_path / "b"
    mapped.write_bytes(b"")
    opened.write_bytes(b"")
    sm, so = mapped.stat(), opened.stat()
    fake_proc(tmp_path, 40, "daemon")  # the leader: no maps, no fds
    task = tmp_path / "proc" / "40" / "task"
    (task / "40" / "fd").mkdir(parents=True)
    (task / "40" / "maps").write_text("")
    (task / "41" / "fd").mkdir(parents=True)
    (task / "41" / "maps").write_text(
        f"7f00-7f01 rw-s 00000000 {dev_text(sm.st_dev)} {sm.st_ino}    /dev/shm/sem.a\n"
    )
    (task / "41" / "fd" / "5").symlink_to(opened)
    (tmp_path / "proc" / "locks").write_text("")
    wanted = [(sm.st_dev, sm.st_ino), (so.st_dev, so.st_ino)]
    found, unreadable, read = holders.scan_holders(wanted, tmp_path / "proc")
    assert unreadable == [] and read == 1
    assert found == {
        (sm.st_dev, sm.st_ino): ("mapped by pid 40 (daemon)",),
        (so.st_dev, so.st_ino): ("fd 5 of thread 41 of pid 40 (daemon)",),
    }


def _leader_exited(tmp_path: Path) -> Path:
    """Pid 40's leader ended (no maps, no fds); its thread 41 runs on. Returns task/."""
    fake_proc(tmp_path, 40, "daemon")
    task = tmp_path / "proc" / "40" / "task"
    (task / "41" / "fd").mkdir(parents=True)
    (task / "41" / "maps").write_text("")
    (tmp_path / "proc" / "locks").write_text("")
    return task


def test_a_hidden_thread_of_an_ended_leader_is_a_doubt(tmp_path: Path) -> None:
    """A thread whose maps or fd cannot be read (the reader says hidden, not gone) may hold
    what its leader no longer shows: a doubt, never "no holder"."""
    task = _leader_exited(tmp_path)
    (task / "41" / "maps").unlink()
    (task / "41" / "maps").mkdir()  # reading it fails: EISDIR, hidden
    (task / "42").mkdir()
    (task / "42" / "maps").write_text("")
    (task / "42" / "fd").write_text("")  # listing it fails: ENOTDIR, hidden
    _, unreadable, read = holders.scan_holders([(1, 2)], tmp_path / "proc")
    assert read == 1
    assert sorted(unreadable) == [
        "thread 41 of pid 40 (Is a directory)",
        "thread 42 of pid 40 (Not a directory)",
    ]
    h = holders.read_holders([(1, 2)], tmp_path / "proc")
    assert h.blind is not None and "thread 41 of pid 40 (Is a directory)" in h.blind


def test_hidden_threads_list_of_an_ended_leader_is_a_doubt(tmp_path: Path) -> None:
    """The leader shows nothing and its task/ cannot be listed (hidden, not gone): whatever
    its threads hold is unseen, so it is a doubt (it was once passed over as "exited")."""
    task = _leader_exited(tmp_path)
    for p in sorted(task.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    task.rmdir()
    task.write_text("")  # listing it fails: ENOTDIR, hidden
    _, unreadable, read = holders.scan_holders([(1, 2)], tmp_path / "proc")
    assert (unreadable, read) == (["threads of pid 40 (Not a directory)"], 1)


def test_a_leader_gone_with_its_threads_blinds_nothing(tmp_path: Path) -> None:
    """No task/ at all (ENOENT: the process ended meanwhile): nothing there to doubt."""
    fake_proc(tmp_path, 40, "daemon")
    (tmp_path / "proc" / "locks").write_text("")
    assert holders.scan_holders([(1, 2)], tmp_path / "proc") == ({}, [], 1)


def test_an_fd_that_cannot_be_stat_is_a_doubt(tmp_path: Path) -> None:
    """An fd whose stat fails with anything but "gone" (here ELOOP) is hidden: a doubt."""
    fake_proc(tmp_path, 7, "x", "7f00-7f01 r--p 00000000 00:00 0 \n")
    (tmp_path / "proc" / "7" / "fd" / "3").symlink_to("3")  # a loop: ELOOP
    (tmp_path / "proc" / "7" / "fd" / "4").symlink_to(tmp_path / "closed")  # ENOENT: gone
    (tmp_path / "proc" / "locks").write_text("")
    _, unreadable, _ = holders.scan_holders([(1, 2)], tmp_path / "proc")
    assert unreadable == ["fd 3 of pid 7 (Too many levels of symbolic links)"]


def _two_threads(tmp_path: Path, opened: Path) -> Path:
    """Pid 50 maps something and has a second thread, 51, whose own fd table (a captured
    tree: no kcmp to compare them) holds `opened`. Returns task/."""
    fake_proc(tmp_path, 50, "worker", "7f00-7f01 r--p 00000000 00:00 0 \n")
    task = tmp_path / "proc" / "50" / "task"
    for tid in ("50", "51"):
        (task / tid / "fd").mkdir(parents=True)
    (task / "51" / "fd" / "4").symlink_to(opened)
    (tmp_path / "proc" / "locks").write_text("")
    return task


def test_a_threads_own_fd_table_is_read_while_its_leader_lives(tmp_path: Path) -> None:
    """A thread that called unshare(CLONE_FILES) holds a queue only in its own table; the
    leader shows maps (it lives): the thread's fds are read all the same (tables that
    cannot be compared are read)."""
    opened = tmp_path / "q"
    opened.write_bytes(b"")
    so = opened.stat()
    _two_threads(tmp_path, opened)
    found, unreadable, read = holders.scan_holders([(so.st_dev, so.st_ino)], tmp_path / "proc")
    assert (unreadable, read) == ([], 1)
    assert found == {(so.st_dev, so.st_ino): ("fd 4 of thread 51 of pid 50 (worker)",)}


def test_a_threads_fd_table_that_cannot_be_read_is_a_doubt(tmp_path: Path) -> None:
    opened = tmp_path / "q"
    opened.write_bytes(b"")
    task = _two_threads(tmp_path, opened)
    (task / "52").mkdir()
    (task / "52" / "fd").write_text("")  # listing it fails: ENOTDIR, hidden
    _, unreadable, _ = holders.scan_holders([(1, 2)], tmp_path / "proc")
    assert unreadable == ["the fd table of thread 52 of pid 50 (Not a directory)"]


def test_threads_that_cannot_be_listed_are_a_doubt(tmp_path: Path) -> None:
    fake_proc(tmp_path, 50, "worker", "7f00-7f01 r--p 00000000 00:00 0 \n")
    (tmp_path / "proc" / "50" / "task").write_text("")  # stat: 1 link; listing: ENOTDIR
    (tmp_path / "proc" / "locks").write_text("")
    _, unreadable, _ = holders.scan_holders([(1, 2)], tmp_path / "proc")
    assert unreadable == ["threads of pid 50 (Not a directory)"]


def test_a_single_threaded_process_lists_no_threads(tmp_path: Path) -> None:
    """/proc/PID/task's link count 3 (2 + one thread): its task/ is not listed (a thread
    there that holds something is never read: the one stat is the whole cost)."""
    opened = tmp_path / "q"
    opened.write_bytes(b"")
    so = opened.stat()
    task = _two_threads(tmp_path, opened)
    (task / "50" / "fd").rmdir()
    (task / "50").rmdir()  # task/ holds only 51: link count 3, read as one thread
    assert task.stat().st_nlink == 3
    found, _, _ = holders.scan_holders([(so.st_dev, so.st_ino)], tmp_path / "proc")
    assert found == {}


def test_kcmp_tells_a_threads_own_fd_table_from_a_shared_one() -> None:
    """On the live kernel, in our own process: a thread shares our table until it calls
    unshare(CLONE_FILES); a captured tree is never asked about (None)."""
    import ctypes
    import threading

    from ipcjanitor.kernel.procfs import LIVE, Procfs
    from ipcjanitor.kernel.tasks import same_fd_table

    tids: dict[str, int] = {}
    go, done = threading.Event(), threading.Event()

    def thread(own: bool) -> None:
        if own:
            assert ctypes.CDLL(None, use_errno=True).unshare(0x400) == 0  # CLONE_FILES
        tids["own" if own else "shared"] = threading.get_native_id()
        go.set() if len(tids) == 2 else None
        done.wait(10)

    threads = [threading.Thread(target=thread, args=(own,)) for own in (False, True)]
    for t in threads:
        t.start()
    try:
        assert go.wait(10)
        me = os.getpid()
        assert same_fd_table(LIVE, me, tids["shared"]) is True
        assert same_fd_table(LIVE, me, tids["own"]) is False
        assert same_fd_table(Procfs(LIVE.root), me, tids["own"]) is None  # not live
        assert same_fd_table(LIVE, me, 2**22 + 12345) is None  # no such task: ESRCH
    finally:
        done.set()
        for t in threads:
            t.join()

"""doctor's pure parts: limits against use, and the missing-hook hint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.commands import doctor
from ipcjanitor.commands.doctor import missing_hooks
from ipcjanitor.commands.limits import Limits, limit_rows
from ipcjanitor.model import IpcKind, IpcObject
from ipcjanitor.policy.model import Owner, Policy
from ipcjanitor.systemd import unitctx

LIMITS = Limits(shmmni=10, shmall=100, semmni=10, semmns=20, msgmni=10)


def o(kind: IpcKind, size: int = 0, nsems: int = 0) -> IpcObject:
    return IpcObject(kind, 0, 1, 0, 0, 0, 0, 0o600, size=size, nsems=nsems)


def test_ninety_percent_is_a_problem_eighty_is_not() -> None:
    rows = limit_rows([o(IpcKind.SHM, 4096)] * 9, LIMITS, [o(IpcKind.SHM, 4096)] * 4)
    shm = rows[0]
    assert (shm.used, shm.max, shm.problem, shm.stale) == (9, 10, True, 4)
    assert not limit_rows([o(IpcKind.SHM)] * 8, LIMITS, None)[0].problem


def test_pages_and_semaphores_are_counted_by_size() -> None:
    rows = limit_rows(
        [o(IpcKind.SHM, 4096 * 50 + 1)] * 2 + [o(IpcKind.SEM, nsems=19)], LIMITS, None
    )
    by = {(r.kind, r.measure): r for r in rows}
    assert by[("shm", "pages")].used == 102 and by[("shm", "pages")].problem
    assert by[("sem", "semaphores")].used == 19 and by[("sem", "semaphores")].problem
    assert by[("sem", "objects")].used == 1 and not by[("sem", "objects")].problem
    assert by[("msg", "objects")].used == 0 and by[("msg", "objects")].stale is None


def test_stale_counts_in_each_rows_own_measure() -> None:
    """STALE on the pages row is pages (of stale segments), on the semaphores row semaphores
    (of stale sets): not the objects' count repeated under another measure."""
    stale = [o(IpcKind.SHM, 4096 * 3), o(IpcKind.SEM, nsems=5)]
    rows = limit_rows([*stale, o(IpcKind.SHM, 4096), o(IpcKind.SEM, nsems=2)], LIMITS, stale)
    by = {(r.kind, r.measure): r.stale for r in rows}
    assert by == {("shm", "objects"): 1, ("shm", "pages"): 3, ("sem", "objects"): 1,
                  ("sem", "semaphores"): 5, ("msg", "objects"): 0}  # fmt: skip


def test_owners_without_a_hook_are_listed_with_the_fix(tmp_path: Path) -> None:
    policy = Policy(
        owners=(
            Owner(name="a", key_ranges=((1, 1),), unit="a.service"),
            Owner(name="b", key_ranges=((2, 2),)),
        )
    )
    assert missing_hooks(policy, [tmp_path]) == [
        {"owner": "a", "unit": "a.service", "fix": "ipcjanitor install-hook a.service"}
    ]
    dropin = tmp_path / "a.service.d" / "ipcjanitor.conf"
    dropin.parent.mkdir()
    dropin.write_text(
        '[Service]\nExecStopPost=-+"/usr/lib/python3/dist-packages/ipcjanitor/ipcjanitor-hook" '
        '"/usr/bin/ipcjanitor" "hook" "--unit=%n"\n'
    )
    loaded = unitctx.parse_show("a.service", "LoadState=loaded\n")  # what systemd would say
    assert missing_hooks(policy, [tmp_path], lambda unit: (loaded, None)) == []


def test_a_hook_without_the_clean_environment_is_a_problem(tmp_path: Path) -> None:
    """A drop-in of an older install-hook runs the hook with the service's environment
    (PYTHONPATH, LD_PRELOAD as root): doctor says so, and it is a problem, not a hint."""
    from ipcjanitor.commands.doctor import Report

    policy = Policy(owners=(Owner(name="a", key_ranges=((1, 1),), unit="a.service"),))
    dropin = tmp_path / "a.service.d" / "ipcjanitor.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nExecStopPost=-+/usr/bin/ipcjanitor hook --unit=%n\n")
    (row,) = missing_hooks(policy, [tmp_path])
    assert row["fix"] == "ipcjanitor install-hook a.service"
    assert "without a clean environment" in row["problem"]
    report = Report([], [], [row], [])
    assert not report.healthy and "UNSAFE HOOK: owner a: a.service" in report.text()


# -- stuck pipes, on a fake /proc whose fd links lead to real FIFOs (issue 16 item 10) -------

SP_PC = "0x7ffe9e0324c8 0x7ff189c803d3"
O_WRONLY, O_RDWR = "01", "02"  # fdinfo flags, in octal


def proc_task(proc: Path, pid: int, tid: int, wchan: str, syscall: str) -> None:
    d = proc / str(pid) / "task" / str(tid)
    (d / "fd").mkdir(parents=True)
    (d / "wchan").write_text(wchan)
    (d / "syscall").write_text(syscall)
    if pid == tid:
        (proc / str(pid) / "comm").write_text("worker\n")
        (proc / str(pid) / "stat").write_text(f"{pid} (worker) S 77 1 1 0 -1 0\n")
        (proc / str(pid) / "fd").mkdir()
        (proc / str(pid) / "fdinfo").mkdir()


def proc_fd(proc: Path, pid: int, fd: int, target: Path, flags: str) -> None:
    """fd N of pid (and of each of its threads) opened on target with these flags."""
    base = proc / str(pid)
    (base / "fd" / str(fd)).symlink_to(target)
    (base / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t0{flags}\nmnt_id:\t1\n")
    for task in (base / "task").iterdir():
        (task / "fd" / str(fd)).symlink_to(target)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "app.fifo"
    os.mkfifo(path)  # a file in the test's own directory, never opened: nothing blocks
    return path


def elf(path: Path, ei_class: int) -> Path:
    path.write_bytes(b"\x7fELF" + bytes([ei_class, 1, 1]) + bytes(9))
    return path


def test_a_writer_thread_that_is_not_the_leader_is_found(tmp_path: Path, fifo: Path) -> None:
    proc = tmp_path / "proc"
    proc_task(proc, 10, 10, "hrtimer_nanosleep", f"230 0x1 0x1 0x7ffe 0x0 0x0 0x0 {SP_PC}")
    proc_task(proc, 10, 11, "anon_pipe_write", f"1 0x4 0x5587 0x1000 0x0 0x0 0x0 {SP_PC}")
    proc_fd(proc, 10, 4, fifo, O_WRONLY)
    proc_fd(proc, 10, 3, fifo, "0")  # its own read end
    scan = doctor.find_stuck_pipes(proc, "x86_64")
    (s,) = scan.found
    assert (s.pid, s.tid, s.syscall, s.fds, s.read_fds, s.reader) == (
        10,
        11,
        "write",
        [4, 3],
        [3],
        "self",
    )
    assert s.target == str(fifo) and s.inode == fifo.stat().st_ino and s.holds_read_end
    text = doctor.Report([], scan.found, [], []).text()
    assert f"STUCK PIPE: pid 10 (worker) thread 11 blocked writing fd 4,3 {fifo}," in text


def test_a_fifo_opened_read_write_holds_its_own_read_end(tmp_path: Path, fifo: Path) -> None:
    proc = tmp_path / "proc"
    proc_task(proc, 10, 10, "pipe_write", f"1 0x5 0x5587 0x1000 0x0 0x0 0x0 {SP_PC}")
    proc_fd(proc, 10, 5, fifo, O_RDWR)
    (s,) = doctor.find_stuck_pipes(proc, "x86_64").found
    assert (s.fds, s.read_fds, s.reader, s.holds_read_end) == ([5], [5], "self", True)


def test_a_reader_in_another_process_is_healthy(tmp_path: Path, fifo: Path) -> None:
    proc = tmp_path / "proc"
    proc_task(proc, 10, 10, "pipe_write", f"1 0x5 0x5587 0x1000 0x0 0x0 0x0 {SP_PC}")
    proc_fd(proc, 10, 5, fifo, O_WRONLY)
    proc_task(proc, 20, 20, "do_sys_poll", f"7 0x0 0x0 0x0 0x0 0x0 0x0 {SP_PC}")
    proc_fd(proc, 20, 0, fifo, "0")
    assert doctor.find_stuck_pipes(proc, "x86_64").found == []
    (proc / "20" / "fd" / "0").unlink()  # gone: now no process holds a read end
    (s,) = doctor.find_stuck_pipes(proc, "x86_64").found
    assert (s.reader, s.holds_read_end, s.unreadable) == ("none", False, [])


@pytest.mark.parametrize(
    ("wchan", "syscall", "fd"),
    [
        ("pipe_wait_writable", f"275 0x5 0x0 0x4 0x0 0x10000 0x0 {SP_PC}", 4),  # splice: arg 3
        ("pipe_wait_writable", f"278 0x4 0x7f63 0x1 0x0 0x0 0x0 {SP_PC}", 4),  # vmsplice: arg 1
        ("pipe_wait_writable", f"276 0x3 0x4 0x10000 0x0 0x0 0x0 {SP_PC}", 4),  # tee: arg 2
        ("pipe_wait_readable", f"275 0x4 0x0 0x5 0x0 0x10000 0x0 {SP_PC}", None),  # reading
        ("anon_pipe_write", f"0 0x4 0x0 0x5 0x0 0x0 0x0 {SP_PC}", None),  # read(2)?
    ],
)
def test_splice_vmsplice_and_tee_write_to_their_output_fd(
    tmp_path: Path, fifo: Path, wchan: str, syscall: str, fd: int | None
) -> None:
    proc = tmp_path / "proc"
    proc_task(proc, 10, 10, wchan, syscall)
    proc_fd(proc, 10, 4, fifo, O_WRONLY)
    found = doctor.find_stuck_pipes(proc, "x86_64").found
    assert [s.fds[0] for s in found] == ([] if fd is None else [fd])


def test_an_i386_task_is_read_with_the_i386_numbers(tmp_path: Path, fifo: Path) -> None:
    proc = tmp_path / "proc"
    proc_task(proc, 10, 10, "anon_pipe_write", f"4 0x1 0x8049 0x1000 0x0 0x0 0x0 {SP_PC}")
    proc_fd(proc, 10, 1, fifo, O_RDWR)
    elf(proc / "10" / "exe", 1)  # ELFCLASS32: write(2) is 4, not stat(2)
    (s,) = doctor.find_stuck_pipes(proc, "x86_64").found
    assert (s.syscall, s.fds) == ("write", [1])
    elf(proc / "10" / "exe", 2)  # a 64-bit program in 4 is in stat(2): not a pipe write
    assert doctor.find_stuck_pipes(proc, "x86_64").found == []


def test_a_process_whose_fds_cannot_be_read_makes_it_unknown(
    tmp_path: Path, fifo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as another user, pid 20's fds are EACCES: it may hold the read end. Never 'none'."""
    proc = tmp_path / "proc"
    proc_task(proc, 10, 10, "pipe_write", f"1 0x5 0x5587 0x1000 0x0 0x0 0x0 {SP_PC}")
    proc_fd(proc, 10, 5, fifo, O_WRONLY)
    proc_task(proc, 20, 20, "0", "")
    proc_task(proc, 30, 30, "0", "")
    listdir = os.listdir

    def denied(path: str | os.PathLike[str]) -> list[str]:
        if os.fspath(path) in (f"{proc}/20/fd", f"{proc}/30/fd"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", denied)
    (s,) = doctor.find_stuck_pipes(proc, "x86_64").found
    assert (s.reader, s.unreadable, s.holds_read_end) == ("unknown", [20, 30], False)
    report = doctor.Report([], [s], [], [])
    assert report.healthy, "doctor cannot tell: not a problem found"
    text = report.text()
    assert "no process holds the read end" not in text
    assert "MAYBE STUCK PIPE: pid 10 (worker) blocked writing fd 5" in text
    assert (
        "cannot tell whether another process reads it: the fds of pid 20, 30 could not be read"
        in text
    )
    assert '"reader": "unknown"' in report.json()


def test_tasks_whose_system_call_cannot_be_read_are_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = tmp_path / "proc"
    proc_task(proc, 10, 10, "0", "running")  # no ptrace access: wchan says 0
    proc_task(proc, 20, 20, "0", "running")
    (proc / "10" / "task" / "10" / "syscall").unlink()
    (proc / "10" / "task" / "10" / "syscall").mkdir()  # reading it fails (EISDIR)
    scan = doctor.find_stuck_pipes(proc, "x86_64")
    assert scan.found == []
    assert scan.notes == [
        "stuck pipes: cannot see what pid 10 is blocked in (needs root): a stuck writer there is missed"
    ]


def test_threads_blocked_on_one_pipe_are_one_finding(tmp_path: Path, fifo: Path) -> None:
    proc = tmp_path / "proc"
    for tid in (10, 12, 11):
        proc_task(proc, 10, tid, "anon_pipe_write", f"1 0x4 0x5587 0x1000 0x0 0x0 0x0 {SP_PC}")
    proc_fd(proc, 10, 4, fifo, O_WRONLY)
    (s,) = doctor.find_stuck_pipes(proc, "x86_64").found
    assert (s.tid, s.reader) == (10, "none")


def _queue(id_: int, *, key: int = 0, mode: int = 0, times: tuple[int, int] = (0, 0)) -> IpcObject:
    return IpcObject(
        IpcKind.MSG, id_, key, 33, 33, 33, 33, mode,
        times=(("stime", times[0]), ("rtime", times[1]), ("ctime", 1_700_000_000)),
        last_activity=1_700_000_000,
    )  # fmt: skip


def test_only_private_mode_000_never_used_kept_queues_are_unreachable() -> None:
    objects = [
        _queue(1),  # PHP's msgget(0, 0)
        _queue(2, mode=0o600),  # reachable by its id
        _queue(3, key=0x1234),  # reachable by its key
        _queue(4, times=(1_700_000_001, 0)),  # someone used it
        _queue(5),  # ipcjanitor removes it itself
    ]
    verdicts = {(IpcKind.MSG, i): "unowned" for i in range(1, 5)} | {(IpcKind.MSG, 5): "stale"}
    found = doctor.unreachable_queues(objects, verdicts)
    assert [(q.id, q.verdict) for q in found] == [(1, "unowned")]
    assert [q.id for q in doctor.unreachable_queues(objects, None)] == [1, 5]
    assert "ipcrm -q 1" in found[0].line()


def test_a_queue_an_owner_without_unit_keeps_as_unknown_is_unreachable_too() -> None:
    """Issue 22's case: PHP's msgget(0, 0) under an owner claiming its user's IPC_PRIVATE
    objects without `unit`: kept `unknown` (it records no pid), listed with its removal."""
    objects = [_queue(7), _queue(8, mode=0o600)]
    verdicts = {(IpcKind.MSG, 7): "unknown", (IpcKind.MSG, 8): "unknown"}
    (found,) = doctor.unreachable_queues(objects, verdicts)
    assert (found.id, found.verdict) == (7, "unknown")
    assert "(unknown); remove it with `ipcrm -q 7`" in found.line()


def test_the_checks_are_rows_and_one_runner_builds_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each check is a row of doctor.CHECKS; run_checks runs them in order, their notes after
    the caller's, and the text, --json and the health walk the same rows."""
    import json

    from .test_golden import REPORT

    queue = doctor.UnreachableQueue(3, 4242, "unowned")
    want = REPORT._replace(unreachable=(queue,))

    def fixed(check: doctor.Check) -> doctor.Check:
        found = doctor.Found(getattr(want, check.field), [f"{check.key} note"])
        return check._replace(assess=lambda seen: found)

    monkeypatch.setattr(doctor, "CHECKS", tuple(fixed(c) for c in doctor.CHECKS))
    got = doctor.run_checks(doctor.Seen([]), ["first"])
    notes = ["first", "limits note", "stuck_pipes note", "unreachable_queues note",
             "hooks_missing note"]  # fmt: skip
    assert got == want._replace(notes=notes)
    lines = got.text().splitlines()
    assert lines.index(queue.line()) == lines.index(doctor._stuck_line(REPORT.stuck_pipes[-1])) + 1
    doc = json.loads(got.json())
    assert list(doc) == [*doctor.JSON_ORDER, "notes", "healthy"]
    assert doc["unreachable_queues"] == [queue._asdict()] and doc["healthy"] is False
    assert {c.key for c in doctor.CHECKS} == set(doctor.JSON_ORDER)
    calm = doctor.Report([REPORT.limits[1]], [], [{"owner": "a", "unit": "a.service", "note": "x"}],
                         [])  # fmt: skip
    assert calm.healthy and calm.text().endswith("healthy")
    assert not calm._replace(unreachable=(queue,)).healthy  # an unreachable queue is a problem

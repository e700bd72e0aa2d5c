"""Reading what a task is blocked in from /proc/PID/task/TID/syscall."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from ipcjanitor import _sysvipc
from ipcjanitor.kernel import tasks
from ipcjanitor.kernel.tasks import parse_syscall, queue_waiters

SP_PC = "0x7ffe9e0324c8 0x7ff189c803d3"


@pytest.mark.parametrize(
    ("line", "machine", "found"),
    [
        (f"70 0x3 0x7ff189944030 0x32 0x0 0x0 0x0 {SP_PC}", "x86_64", ("msgrcv", 3)),
        (f"69 0x10 0x7ff18 0x400 0x0 0x0 0x0 {SP_PC}", "x86_64", ("msgsnd", 16)),
        (f"401 0x7 0x1 0x2 0x0 0x0 0x0 {SP_PC}", "x86_64", ("msgrcv", 7)),  # an i386 task
        (f"1073741894 0x5 0x1 0x2 0x0 0x0 0x0 {SP_PC}", "x86_64", ("msgrcv", 5)),  # x32
        (f"117 0x1000c 0x9 0x2 0x0 0x0 0x0 {SP_PC}", "i686", ("msgrcv", 9)),  # ipc(MSGRCV)
        (f"117 0xb 0x9 0x2 0x0 0x0 0x0 {SP_PC}", "x86_64", ("msgsnd", 9)),  # ipc(MSGSND)
        (f"188 0x4 0x1 0x2 0x0 0x0 0x0 {SP_PC}", "aarch64", ("msgrcv", 4)),
        (f"189 0x4 0x1 0x2 0x0 0x0 0x0 {SP_PC}", "riscv64", ("msgsnd", 4)),
        (f"0 0x3 0x7ff1 0x32 0x0 0x0 0x0 {SP_PC}", "x86_64", None),  # read(2)
        (f"117 0x1 0x9 0x2 0x0 0x0 0x0 {SP_PC}", "x86_64", None),  # ipc(SEMOP)
        (f"188 0x4 0x1 0x2 0x0 0x0 0x0 {SP_PC}", "x86_64", None),
        ("running", "x86_64", None),
        (f"-1 {SP_PC}", "x86_64", None),  # blocked, but not in a system call
        ("", "x86_64", None),
        ("70 zz 0x0 0x0", "x86_64", None),
    ],
)
def test_parse_syscall(line: str, machine: str, found: tuple[str, int] | None) -> None:
    assert parse_syscall(line, machine) == found


def fake_proc(root: Path, tasks: dict[str, dict[str, str]]) -> Path:
    for pid, threads in tasks.items():
        for tid, text in threads.items():
            d = root / pid / "task" / tid
            d.mkdir(parents=True)
            (d / "syscall").write_text(text)
    (root / "self").mkdir()  # not a pid: skipped
    return root


def test_every_thread_is_read_and_waiters_are_grouped_by_queue(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            "10": {"10": "running", "11": f"70 0x3 0x0 0x32 0x0 0x0 0x0 {SP_PC}"},
            "20": {"20": f"69 0x3 0x0 0x32 0x0 0x0 0x0 {SP_PC}"},
            "30": {"30": f"70 0x8 0x0 0x32 0x0 0x0 0x0 {SP_PC}"},
        },
    )
    found = queue_waiters(proc, "x86_64")
    assert found.blind is None
    assert dict(found.waiters) == {
        3: ("pid 10 (thread 11) is blocked in msgrcv on it", "pid 20 is blocked in msgsnd on it"),
        8: ("pid 30 is blocked in msgrcv on it",),
    } or dict(found.waiters) == {
        3: ("pid 20 is blocked in msgsnd on it", "pid 10 (thread 11) is blocked in msgrcv on it"),
        8: ("pid 30 is blocked in msgrcv on it",),
    }


def test_an_unreadable_task_or_an_unknown_machine_blinds_the_scan(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {"10": {"10": "running"}, "20": {"20": "running"}})
    (proc / "20" / "task" / "20" / "syscall").chmod(0)
    (proc / "20" / "task" / "20" / "syscall").rename(proc / "20" / "task" / "20" / "x")
    (proc / "20" / "task" / "20" / "syscall").mkdir()  # reading a directory: EISDIR
    found = queue_waiters(proc, "x86_64")
    assert found.blind is not None and "pid 20 thread 20" in found.blind
    assert queue_waiters(proc, "sparc64").blind == (
        "the system call numbers of msgrcv/msgsnd on sparc64 are not known"
    )


# -- the pipe writes doctor looks for: the same table, native and 32-bit (compat) numbers -----


@pytest.mark.parametrize(
    ("line", "machine", "compat", "found"),
    [
        (f"1 0x4 0x5611 0x1000 0x0 0x0 0x0 {SP_PC}", "x86_64", False, ("write", 4)),
        (f"20 0x4 0x5611 0x2 0x0 0x0 0x0 {SP_PC}", "x86_64", None, ("writev", 4)),
        (f"275 0x5 0x0 0x4 0x0 0x10000 0x0 {SP_PC}", "x86_64", False, ("splice", 4)),
        (f"278 0x6 0x7f63 0x1 0x0 0x0 0x0 {SP_PC}", "x86_64", False, ("vmsplice", 6)),
        (f"276 0x3 0x7 0x10000 0x0 0x0 0x0 {SP_PC}", "x86_64", False, ("tee", 7)),
        # an i386 task on x86_64: write is 4 (stat for a 64-bit one), writev 146, splice 313
        (f"4 0x1 0x8049 0x1000 0x0 0x0 0x0 {SP_PC}", "x86_64", True, ("write", 1)),
        (f"4 0x1 0x8049 0x1000 0x0 0x0 0x0 {SP_PC}", "x86_64", False, None),
        (f"4 0x1 0x8049 0x1000 0x0 0x0 0x0 {SP_PC}", "x86_64", None, ("write", 1)),
        (f"146 0x2 0x8049 0x1 0x0 0x0 0x0 {SP_PC}", "x86_64", True, ("writev", 2)),
        (f"313 0x5 0x0 0x9 0x0 0x10000 0x0 {SP_PC}", "x86_64", True, ("splice", 9)),
        (f"1 0x4 0x8049 0x1000 0x0 0x0 0x0 {SP_PC}", "x86_64", True, None),  # i386 exit
        (f"1073742340 0x3 0x0 0x2 0x0 0x0 0x0 {SP_PC}", "x86_64", True, ("writev", 3)),  # x32
        (f"4 0x1 0x8049 0x1000 0x0 0x0 0x0 {SP_PC}", "i686", False, ("write", 1)),
        (f"64 0x1 0x0 0x1000 0x0 0x0 0x0 {SP_PC}", "aarch64", False, ("write", 1)),
        (f"340 0x3 0x0 0x5 0x0 0x1000 0x0 {SP_PC}", "aarch64", True, ("splice", 5)),  # arm32
        (f"146 0x1 0x0 0x1 0x0 0x0 0x0 {SP_PC}", "ppc64le", False, ("writev", 1)),
        (f"1 0x4 0x0 0x1000 0x0 0x0 0x0 {SP_PC}", "sparc64", None, None),
        ("running", "x86_64", None, None),
    ],
)
def test_pipe_writes(
    line: str, machine: str, compat: bool | None, found: tuple[str, int] | None
) -> None:
    assert tasks.pipe_write(line, machine, compat) == found


def test_the_msg_rule_still_knows_only_its_machines() -> None:
    """Numbers of write(2) on ppc64le/s390x do not make their queues' waiters known."""
    assert tasks.queue_waiters(Path("/nonexistent"), "ppc64le").blind is not None


def test_a_32_bit_executable_is_a_compat_task_on_a_64_bit_machine(tmp_path: Path) -> None:
    (tmp_path / "i386").write_bytes(b"\x7fELF\x01\x01\x01" + bytes(9))
    (tmp_path / "amd64").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9))
    assert tasks.is_compat(tmp_path / "i386", "x86_64") is True
    assert tasks.is_compat(tmp_path / "amd64", "x86_64") is False
    assert tasks.is_compat(tmp_path / "i386", "i686") is False
    assert tasks.is_compat(tmp_path / "missing", "x86_64") is None


def test_the_table_of_this_machine_matches_its_own_syscall_header() -> None:
    """kernel/tasks.py's numbers for the build machine are <sys/syscall.h>'s (exported by the
    C extension): a number copied wrong would make doctor and learn misread a blocked task."""
    machine = platform.machine()
    assert machine in tasks.PIPE_WRITE_MACHINES, f"no syscall table for {machine}"
    native = tasks._SYSCALLS[machine].native
    ours = {name: nr for nr, name in native.items() if not nr & tasks._X32_BIT and nr < 512}
    header = dict(_sysvipc.SYSCALLS)
    if not tasks._SYSCALLS[machine].queues:  # this table does not claim the msg numbers
        for name in ("msgsnd", "msgrcv", "semop", "semtimedop"):
            header.pop(name, None)
    assert ours == header

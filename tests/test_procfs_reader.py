"""kernel/procfs.py, the one /proc/PID reader: gone and hidden told once, the live flag."""

from __future__ import annotations

import os
from pathlib import Path

from ipcjanitor.kernel import processes, procfs, tasks
from ipcjanitor.kernel.procfs import LIVE, Procfs, Unread
from ipcjanitor.model import Presence


def _proc(tmp_path: Path, cgroups: dict[int, str]) -> Path:
    root = tmp_path / "proc"
    for pid, text in cgroups.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
    (root / "self").mkdir(parents=True, exist_ok=True)  # not a pid
    return root


def test_units_by_pid_serves_running_units_and_unit_processes(tmp_path: Path) -> None:
    root = _proc(tmp_path, {
        10: "0::/system.slice/app.service\n",
        11: "12:name=systemd:/system.slice/worker@2.service\n0::/system.slice/worker@2.service\n",
        12: "0::/user.slice/user-1000.slice/session-3.scope\n",
        13: "garbage without colons\n",
        14: "0::/system.slice/app.service\n",
    })  # fmt: skip
    (root / "15").mkdir()
    (root / "15" / "cgroup").mkdir()  # unreadable (EISDIR): passed over
    got = dict(procfs.units_by_pid(root, exclude={14}))
    assert got == {
        10: {"system.slice", "app.service"}, 11: {"system.slice", "worker@2.service"},
        12: {"user-1000.slice",
        "user.slice", "session-3.scope"}, 13: frozenset(),
    }  # fmt: skip
    patterns = ["app.service", "worker@.service", "gone.service"]
    running = processes.running_units(patterns, root, frozenset({14}))
    listed = processes.unit_processes(patterns, root, frozenset({14}))
    assert running == {"app.service": True, "worker@.service": True, "gone.service": False}
    assert listed == {"app.service": [10], "worker@.service": [11], "gone.service": []}
    assert {p: bool(v) for p, v in listed.items()} == running


def test_gone_and_hidden_are_told_apart(tmp_path: Path) -> None:
    root = _proc(tmp_path, {20: "0::/a.service\n"})
    assert procfs.read_text(root, 20, "cgroup") == "0::/a.service\n"
    gone = procfs.read_text(root, 21, "stat")
    assert isinstance(gone, Unread) and gone.gone and not gone.hidden
    (root / "20" / "task").mkdir()
    (root / "20" / "task" / "20").mkdir()
    (root / "20" / "task" / "20" / "syscall").write_text("7 0x3 0x0 0x0 0x0 0x0 0x0 0x7ff 0x7ff\n")
    (root / "20" / "task" / "21").mkdir()
    (root / "20" / "task" / "21" / "syscall").mkdir()  # EISDIR: hidden, not gone
    got = dict(procfs.task_syscalls(root, 20))
    assert got["20"] == "7 0x3 0x0 0x0 0x0 0x0 0x0 0x7ff 0x7ff\n"
    assert isinstance(got["21"], Unread) and got["21"].hidden
    assert list(procfs.task_syscalls(root, 21)) == []  # a process gone: no thread, no doubt
    assert procfs.status_field("Name:\tx\nCapEff:\t0000003fffffffff\n", "CapEff") == (
        "0000003fffffffff"
    )


def test_the_live_kernel_is_a_flag_not_the_path(tmp_path: Path) -> None:
    """A missing /proc/PID of a pid that exists is hidden (hidepid=invisible) only on the live
    procfs, where kill(0) speaks of the same pids; a captured tree's missing pid is gone."""
    root = _proc(tmp_path, {})
    me = os.getpid()
    assert processes.probe(me, root, 0.0).presence is Presence.ABSENT
    assert processes.probe(me, Procfs(root), 0.0).presence is Presence.ABSENT
    assert processes.probe(me, Procfs(root, live=True), 0.0).presence is Presence.HIDDEN
    assert processes.probe(me, LIVE, 0.0).presence is Presence.PRESENT
    # a captured tree at the live path is not the live kernel: no /proc/self check, no kill(0)
    assert processes.probe(2**22 + 7, Procfs(Path("/proc")), 0.0).presence is Presence.ABSENT
    processes.visibility(Procfs(root))  # no /proc/self there: not asked
    assert procfs.of(root) == Procfs(root, live=False) and procfs.of(LIVE) is LIVE


def test_queue_waiters_read_through_the_reader(tmp_path: Path) -> None:
    root = _proc(tmp_path, {30: ""})
    (root / "30" / "task" / "31").mkdir(parents=True)
    msgrcv = 70  # x86_64's
    (root / "30" / "task" / "31" / "syscall").write_text(
        f"{msgrcv} 0x5 0x0 0x0 0x0 0x0 0x0 0x7ff 0x7ff\n"
    )
    (root / "32" / "task" / "32" / "syscall").mkdir(parents=True)  # hidden: a doubt
    found = tasks.queue_waiters(root, "x86_64")
    assert found.waiters == {5: ("pid 30 (thread 31) is blocked in msgrcv on it",)}
    assert found.blind is not None and "pid 32 thread 32" in found.blind


def test_learn_watches_the_live_kernel_unless_handed_a_tree(tmp_path: Path) -> None:
    from ipcjanitor.learn import command as learn

    assert learn._Watcher("x.service").proc is LIVE  # its IPC tables from *_STAT_ANY
    assert learn._Watcher("x.service", tmp_path).proc == Procfs(tmp_path, live=False)


def test_doctor_reads_each_users_msgqueue_limit_through_the_reader(tmp_path: Path) -> None:
    from ipcjanitor.commands.doctor_posix import user_limits

    root = _proc(tmp_path, {40: "", 41: "", 42: ""})
    limits = "Limit  Soft Limit  Hard Limit  Units\nMax msgqueue size  {} 819200 bytes\n"
    for pid, uid, soft in ((40, 1000, "819200"), (41, 1000, "4096"), (42, 1001, "unlimited")):
        (root / str(pid) / "status").write_text(f"Name:\tx\nUid:\t{uid}\t0\t0\t0\n")
        (root / str(pid) / "limits").write_text(limits.format(soft))
    (root / "43").mkdir()  # gone meanwhile: no status
    assert user_limits({1000, 1001, 1002}, root) == {1000: 4096, 1001: 0}


def _self(root: Path, status: str, mountinfo: str, pid_ns: str) -> None:
    (root / "self" / "ns").mkdir(parents=True, exist_ok=True)
    (root / "self" / "status").write_text(status)
    (root / "self" / "mountinfo").write_text(mountinfo)
    (root / "self" / "ns" / "pid").symlink_to(pid_ns)


HOST_NS = f"pid:[{processes.INIT_PID_NS_INODE}]"
PROC_HIDDEN = "22 1 0:21 / /proc rw,nosuid - proc proc rw,hidepid=invisible,gid=4444\n"
NOBODY = "Name:\tcapture\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n"
NOBODY += "Groups:\t\nCapEff:\t0000000000000000\n"


def test_a_captured_tree_answers_for_itself_who_saw_it_and_how(tmp_path: Path) -> None:
    """hidepid=, the reader's credentials and its pid namespace come from the tree's own
    self/ (mountinfo, status, ns/pid), never from the live /proc of the process reading it."""
    root = _proc(tmp_path, {})
    _self(root, NOBODY, PROC_HIDDEN, "pid:[4026532999]")
    tree = Procfs(root)
    blind = processes.hidepid_blinds(tree)
    assert blind is not None and "hidepid=invisible" in blind
    assert not processes.in_host_pid_namespace(tree)
    seen = processes.visibility(tree)
    assert seen.hidden_pids is not None and seen.blind is not None
    assert processes.visibility(tree, pid_namespace_complete=True).hidden_pids is None


def test_a_captured_tree_in_the_gid_exempt_group_in_the_host_namespace_sees_all(
    tmp_path: Path,
) -> None:
    root = _proc(tmp_path, {})
    _self(root, NOBODY.replace("Groups:\t", "Groups:\t4444"), PROC_HIDDEN, HOST_NS)
    tree = Procfs(root)
    assert processes.hidepid_blinds(tree) is None and processes.in_host_pid_namespace(tree)
    assert processes.visibility(tree) == processes.Visibility(None, None)
    root_caps = NOBODY.replace("Uid:\t65534\t65534", "Uid:\t0\t0").replace(
        "0000000000000000", f"{1 << 19:016x}"
    )
    (root / "self" / "status").write_text(root_caps)
    assert processes.hidepid_blinds(tree) is None  # root with CAP_SYS_PTRACE


def test_a_captured_tree_that_does_not_say_its_pid_namespace_is_outside_the_hosts(
    tmp_path: Path,
) -> None:
    """No self/ns/pid in the tree: like an unreadable link on the live /proc, a doubt."""
    root = _proc(tmp_path, {})
    assert not processes.in_host_pid_namespace(Procfs(root))
    assert processes.hidepid_blinds(Procfs(root)) is None  # no mountinfo: no hidepid seen

"""The unit's own cgroup as the proof (issue 20): the tree's reader on a fake tree, and the pure
judgement of what it proves."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.engine.decide import decide_one
from ipcjanitor.kernel import cgroups, processes
from ipcjanitor.kernel.cgroups import (
    CgroupTree,
    Hierarchy,
    UnitCgroup,
    hierarchies,
    judge,
    more_tasks,
    own_path,
    pids_hierarchy,
    read_tree,
    unit_directory,
)
from ipcjanitor.model import (
    HostFacts,
    IpcKind,
    IpcObject,
    PidRecord,
    Presence,
    ProcessInfo,
    UnitState,
    Verdict,
)
from ipcjanitor.policy.model import Owner

# The contained systemd's view: the launcher's mounts under systemd's own (read-only tmpfs)
CONTAINER_MOUNTINFO = """\
239 238 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
248 239 0:37 /.. /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
249 239 0:38 /.. /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
212 239 0:78 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,size=4096k
216 212 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
284 212 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
285 212 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup rw
"""


def test_the_unified_hierarchy_on_top_is_preferred() -> None:
    found = hierarchies(CONTAINER_MOUNTINFO)
    assert [(str(h.mount), h.unified, h.root) for h in found] == [
        ("/sys/fs/cgroup/unified", True, "/"),
        ("/sys/fs/cgroup/systemd", False, "/"),
    ]
    v1_only = "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
    assert [h.line for h in hierarchies(v1_only)] == ["name=systemd"]
    assert hierarchies("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n") == []


def test_own_path_and_the_unit_directory_in_it() -> None:
    text = "9:name=systemd:/system.slice/app.service\n0::/system.slice/app.service/.control\n"
    v2, v1 = hierarchies(CONTAINER_MOUNTINFO)
    assert own_path(text, v2) == "/system.slice/app.service/.control"
    assert own_path(text, v1) == "/system.slice/app.service"
    assert unit_directory("/system.slice/app.service/.control", "app.service") == (
        "/system.slice/app.service"
    )
    assert unit_directory("/system.slice/system-worker.slice/worker@2.service", "worker@2.service")
    assert unit_directory("/system.slice/_memory.service", "memory.service") == (
        "/system.slice/_memory.service"
    )
    assert unit_directory("/user.slice/session-1.scope", "app.service") is None
    assert unit_directory("/../../x/app.service", "app.service") is None  # outside our root


def test_the_unit_directory_is_the_outermost_of_its_name() -> None:
    # a delegated unit owns its subtree: it may nest a directory of its own name there and move
    # the hook (a process in its subtree) into it; only the outermost one is systemd's
    path = "/system.slice/app.service/payload/app.service"
    assert unit_directory(path, "app.service") == "/system.slice/app.service"
    assert unit_directory("/system.slice/app.service/_app.service", "app.service") == (
        "/system.slice/app.service"
    )


def _tree(root: Path, layout: dict[str, str]) -> Hierarchy:
    for rel, procs in layout.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text(procs)
        (d / "cgroup.events").write_text("populated 0\n")
    (root / "cgroup.procs").write_text("1\n")
    return Hierarchy(root, True, "0:", "/")


LAYOUT = {
    "init.scope": "1\n",
    "system.slice": "",
    "system.slice/system-worker.slice": "",
    "system.slice/system-worker.slice/worker@1.service": "310\n311\n",
    "system.slice/system-worker.slice/worker@2.service": "",
    "system.slice/app.service": "",
    "system.slice/app.service/.control": "400\n",  # Delegate=: the hook's own directory
    "system.slice/app.service/payload": "",
    "system.slice/app.service/payload/inner": "0\n",  # a process of another pid namespace
    "system.slice/_memory.service": "77\n",
    "machine.slice/machine-c.scope/system.slice/app.service": "",  # a nested manager's unit
}


def test_every_directory_named_after_a_unit_and_everything_below(tmp_path: Path) -> None:
    h = _tree(tmp_path, LAYOUT)
    pats = ["worker@.service", "worker@2.service", "app.service", "memory.service", "gone.service"]
    tree = read_tree(h, pats, {}, frozenset({400}), complete=None)
    assert tree.blind is None
    units = tree.units
    assert units["worker@.service"].pids == (310, 311)  # any instance
    assert sorted(units["worker@.service"].directories) == [
        "/system.slice/system-worker.slice/worker@1.service",
        "/system.slice/system-worker.slice/worker@2.service",
    ]
    assert units["worker@2.service"].pids == ()  # killed while worker@1 runs
    assert sorted(units["app.service"].pids) == [0]  # ours (400) excluded; the 0 is alive
    assert len(units["app.service"].directories) == 2
    assert units["memory.service"].pids == (77,)  # cg_escape()d
    assert units["gone.service"] == UnitCgroup((), (), True)
    assert judge(units["worker@2.service"], hidden_pids=True) is UnitState.STOPPED
    assert judge(units["app.service"], hidden_pids=True) is UnitState.RUNNING


def test_the_hook_reads_its_own_unit_directory_without_walking(tmp_path: Path) -> None:
    h = _tree(tmp_path, LAYOUT)
    own = ("app.service", "/system.slice/app.service")
    tree = read_tree(h, ["app.service"], {}, frozenset({400}), complete="no init.scope", own=own)
    assert tree.blind is None and tree.units["app.service"].pids == (0,)
    # another pattern needs the whole tree, which is not known to be whole: nothing for it
    tree = read_tree(
        h, ["app.service", "worker@.service"], {}, frozenset(), complete="why", own=own
    )
    assert tree.blind == "why" and "worker@.service" not in tree.units
    assert sorted(tree.units["app.service"].pids) == [0, 400]


def test_an_unreadable_tree_proves_nothing(tmp_path: Path) -> None:
    h = Hierarchy(tmp_path / "missing", True, "0:", "/")
    tree = read_tree(h, ["app.service"], {}, frozenset(), complete=None)
    assert tree.blind is not None and "not there" in tree.blind and tree.units == {}
    h = _tree(tmp_path / "t", {"system.slice/app.service": "5\n"})
    (tmp_path / "t" / "system.slice" / "app.service" / "cgroup.procs").unlink()
    (tmp_path / "t" / "system.slice" / "app.service" / "cgroup.procs").mkdir()  # EISDIR
    tree = read_tree(h, ["app.service"], {}, frozenset(), complete=None)
    assert tree.blind is not None and "cgroup.procs" in tree.blind


def test_an_alias_is_found_under_its_primary_name(tmp_path: Path) -> None:
    h = _tree(tmp_path, {"system.slice/mariadb.service": "9\n"})
    tree = read_tree(h, ["mysql.service"], {"mysql.service": "mariadb.service"}, frozenset(),
                     complete=None)  # fmt: skip
    assert tree.units["mysql.service"].pids == (9,)


@given(
    pids=st.lists(st.integers(min_value=0, max_value=2**22), max_size=5),
    unified=st.booleans(),
    hidden=st.booleans(),
)
def test_judge(pids: list[int], unified: bool, hidden: bool) -> None:
    """Any process listed (0 included) is life; none proves a stop on v2 in any pid namespace,
    on v1 only where no process can hide from it; no reading proves nothing."""
    found = UnitCgroup(("/x.service",), tuple(pids), unified)
    state = judge(found, hidden)
    if pids:
        assert state is UnitState.RUNNING
    elif unified or not hidden:
        assert state is UnitState.STOPPED
    else:
        assert state is None
    assert judge(None, hidden) is None


HIDDEN = "ipcjanitor runs outside the host's pid namespace"


def _states(tree: CgroupTree, tmp_path: Path) -> tuple[dict[str, UnitState], dict[str, str]]:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    seen = processes.Visibility(HIDDEN, HIDDEN)
    return processes._unit_states({"app.service"}, proc, frozenset(), {}, seen, tree=tree)


def test_outside_the_host_pid_namespace_an_empty_cgroup_proves_the_stop(tmp_path: Path) -> None:
    empty = CgroupTree({"app.service": UnitCgroup(("/a",), (), True)})
    assert _states(empty, tmp_path)[0] == {"app.service": UnitState.STOPPED}
    zero = CgroupTree({"app.service": UnitCgroup(("/a",), (0,), True)})
    states, notes = _states(zero, tmp_path)
    assert states == {"app.service": UnitState.RUNNING}
    assert "cannot see (pid 0 in cgroup.procs)" in notes["app.service"]
    v1 = CgroupTree({"app.service": UnitCgroup(("/a",), (), False)})
    states, notes = _states(v1, tmp_path)
    assert states == {"app.service": UnitState.UNKNOWN}
    assert "cgroup v1 leaves out" in notes["app.service"]
    blind = CgroupTree(blind="cannot read the cgroup tree at /sys/fs/cgroup: EACCES")
    states, notes = _states(blind, tmp_path)  # the /proc scan, under the blindness rules
    assert states == {"app.service": UnitState.UNKNOWN} and "EACCES" in notes["app.service"]


OWNER = Owner(name="app", unit="app.service")


def _obj(kind: IpcKind, pids: tuple[PidRecord, ...], **kw: object) -> IpcObject:
    base = dict(kind=kind, id=1, key=0x61040001, uid=0, gid=0, cuid=0, cgid=0, mode=0o600)
    return IpcObject(**{**base, **kw, "pids": pids})  # type: ignore[arg-type]


def test_a_stopped_unit_outside_the_host_pid_namespace() -> None:
    """The cgroup proves the unit rule; zero pids in the objects stay doubts."""
    facts = HostFacts(
        processes={42: ProcessInfo(Presence.ABSENT)},
        units={"app.service": UnitState.STOPPED},
        hidden_pids=HIDDEN,
        blind=HIDDEN,
    )
    shm = _obj(IpcKind.SHM, (PidRecord("creator", 42), PidRecord("last shmat/shmdt", 42)),
               nattch=0, times=(("atime", 100), ("ctime", 100)), last_activity=100)  # fmt: skip
    d = decide_one(shm, OWNER, facts, 0, 10_000)
    assert d.verdict is Verdict.STALE, d.reason
    sem = _obj(IpcKind.SEM, (PidRecord("last semop on sem 0", 42),
                             PidRecord("last semop on sem 1", 0, traced=False)),
               nsems=2, values=(1, 0), times=(("otime", 100), ("ctime", 100)),
               last_activity=100)  # fmt: skip
    d = decide_one(sem, OWNER, facts, 0, 10_000)
    assert d.verdict is Verdict.UNKNOWN and "may hide a pid" in d.reason
    running = facts._replace(
        units={"app.service": UnitState.RUNNING},
        unit_notes={"app.service": "its cgroup lists 1 process(es) this pid namespace cannot see"},
    )
    d = decide_one(shm, OWNER, running, 0, 10_000)
    assert d.verdict is Verdict.IN_USE and "cannot see" in d.reason


def test_where_the_tree_cannot_be_read_the_proc_scan_decides(tmp_path: Path) -> None:
    """Issue 20: an unreadable cgroup tree proves nothing; /proc/PID/cgroup decides, under the
    blindness rules (a delegated unit's process in a sub-cgroup of another name counts too)."""
    tree = read_tree(Hierarchy(tmp_path / "gone", True, "0:", "/"), ["app.service"], {},
                     frozenset(), complete=None)  # fmt: skip
    assert tree.blind is not None and tree.units == {}
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("0::/system.slice/app.service/payload/inner.service\n")
    host = processes.Visibility(None, None)

    def states(seen: processes.Visibility) -> tuple[dict[str, UnitState], dict[str, str]]:
        return processes._unit_states({"app.service"}, proc, frozenset(), {}, seen, tree=tree)

    assert states(host) == ({"app.service": UnitState.RUNNING}, {})
    (proc / "7" / "cgroup").write_text("0::/system.slice/other.service\n")
    assert states(host) == ({"app.service": UnitState.STOPPED}, {})  # all seen: a real stop
    blind = processes.Visibility(HIDDEN, HIDDEN)
    found, notes = states(blind)
    assert found == {"app.service": UnitState.UNKNOWN} and "not there" in notes["app.service"]


def test_a_populated_cgroup_whose_walk_listed_no_process_is_running(tmp_path: Path) -> None:
    """A delegated unit's process moving between its sub-cgroups while the walk reads them
    (from one not yet read to one already read) is listed by none: cgroup.events of the unit's
    directory, read after the walk, says at once whether anything is left in its subtree."""
    h = _tree(tmp_path, {"system.slice/app.service/a": "", "system.slice/app.service/b": ""})
    (tmp_path / "system.slice" / "app.service" / "cgroup.procs").write_text("")
    tree = read_tree(h, ["app.service"], {}, frozenset(), complete=None)
    assert judge(tree.units["app.service"], hidden_pids=False) is UnitState.STOPPED
    (tmp_path / "system.slice" / "app.service" / "cgroup.events").write_text("populated 1\n")
    tree = read_tree(h, ["app.service"], {}, frozenset(), complete=None)
    assert tree.units["app.service"].pids == ()
    assert judge(tree.units["app.service"], hidden_pids=True) is UnitState.RUNNING
    # our own process in it (ipcjanitor run from inside the unit) keeps the walk's word
    (tmp_path / "system.slice" / "app.service" / "a" / "cgroup.procs").write_text("5\n")
    tree = read_tree(h, ["app.service"], {}, frozenset({5}), complete=None)
    assert judge(tree.units["app.service"], hidden_pids=False) is UnitState.STOPPED


def test_the_hooks_unit_counts_more_tasks_than_the_hook_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook's walk lists only the hook; pids.current of the unit's directory counts every
    task of its subtree at once: more than the hook's own threads is a task the walk missed
    (one moving between sub-cgroups); equal, fewer, unreadable or garbage: the walk decides."""
    h = _tree(tmp_path, {"system.slice/app.service/.control": "400\n"})
    own = ("app.service", "/system.slice/app.service")
    counter = tmp_path / "system.slice" / "app.service" / "pids.current"
    monkeypatch.setattr(cgroups, "_own_tasks", lambda whose="self": 2)

    def state(*counters: Path) -> UnitState | None:
        tree = read_tree(h, ["app.service"], {}, frozenset({400}), complete=None, own=own,
                         counters=tuple(map(str, counters)))  # fmt: skip
        return judge(tree.units["app.service"], hidden_pids=True)

    counter.write_text("3\n")
    assert state(counter) is UnitState.RUNNING
    assert state(tmp_path / "missing", counter) is UnitState.RUNNING  # the first readable
    for text in ("2\n", "1\n", "", "max\n"):
        counter.write_text(text)
        assert state(counter) is UnitState.STOPPED, text  # the walk's word
    assert state(tmp_path / "missing") is UnitState.STOPPED
    assert state() is UnitState.STOPPED
    # a process the walk lists decides alone; the counter is never read as proof of a stop
    (tmp_path / "system.slice" / "app.service" / "cgroup.procs").write_text("500\n")
    counter.write_text("1\n")
    assert state(counter) is UnitState.RUNNING
    assert more_tasks(3, 2) and not more_tasks(2, 2) and not more_tasks(1, 2)


def test_our_own_tasks_unreadable_leaves_the_walk_to_decide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = _tree(tmp_path, {"system.slice/app.service/.control": "400\n"})
    counter = tmp_path / "system.slice" / "app.service" / "pids.current"
    counter.write_text("9\n")

    def unreadable(whose: str = "self") -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cgroups, "_own_tasks", unreadable)
    tree = read_tree(h, ["app.service"], {}, frozenset({400}), complete=None,
                     own=("app.service", "/system.slice/app.service"),
                     counters=(str(counter),))  # fmt: skip
    assert judge(tree.units["app.service"], hidden_pids=True) is UnitState.STOPPED


def test_the_v1_pids_hierarchy_and_our_path_in_it() -> None:
    mountinfo = (
        "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    found = pids_hierarchy(mountinfo)
    assert found is not None and str(found.mount) == "/sys/fs/cgroup/pids" and found.root == "/"
    text = "8:cpu,pids:/system.slice/app.service\n0::/system.slice/app.service/.control\n"
    assert own_path(text, found) == "/system.slice/app.service"
    assert pids_hierarchy(mountinfo.splitlines()[1]) is None
    over = mountinfo + "50 39 0:40 / /sys/fs/cgroup/pids rw - tmpfs tmpfs rw\n"
    assert pids_hierarchy(over) is None  # something else mounted over it


def test_a_served_hook_counts_its_launchers_tasks_not_the_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook server is no task of the unit; its launcher is (hook/serve.py): the count it
    compares pids.current with is the launcher's (/proc/PID/task), never the server's."""
    h = _tree(tmp_path, {"system.slice/app.service/.control": "400\n"})
    own = ("app.service", "/system.slice/app.service")
    counter = tmp_path / "system.slice" / "app.service" / "pids.current"
    counter.write_text("2\n")  # the launcher, and one task the walk missed
    asked: list[str] = []
    tasks = {"self": 3, "400": 1}  # the server runs threads; the launcher has one

    def own_tasks(whose: str = "self") -> int:
        asked.append(whose)
        return tasks[whose]

    monkeypatch.setattr(cgroups, "_own_tasks", own_tasks)
    monkeypatch.setattr(cgroups, "SETTLE", 0.02)  # the count stays above: read again meanwhile
    tree = read_tree(h, ["app.service"], {}, frozenset({400}), complete=None, own=own,
                     counters=(str(counter),), tasks_of="400")  # fmt: skip
    assert asked and set(asked) == {"400"}  # the launcher's, on every read, never the server's
    assert judge(tree.units["app.service"], hidden_pids=True) is UnitState.RUNNING


def test_a_counted_task_that_is_only_waiting_to_be_reaped_leaves_the_walk_to_decide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pids.current counts an exited task until it is reaped: right after a kill, the
    unit's last processes may still be zombies for a moment. A count above the hook's own
    is read again: falling to it, the walk's "stopped" stands (seen in CI: the hook kept a
    killed PostgreSQL's DSM files, and PostgreSQL's restart removed them itself); a count
    that stays above through SETTLE is a task there."""
    h = _tree(tmp_path, {"system.slice/app.service/.control": "400\n"})
    own = ("app.service", "/system.slice/app.service")
    counter = tmp_path / "system.slice" / "app.service" / "pids.current"
    monkeypatch.setattr(cgroups, "_own_tasks", lambda whose="self": 1)
    monkeypatch.setattr(cgroups, "SETTLE", 0.05)
    pauses: list[int] = []

    def reaped_after_two_pauses() -> None:
        pauses.append(1)
        if len(pauses) == 2:
            counter.write_text("1\n")

    def state() -> UnitState | None:
        tree = read_tree(h, ["app.service"], {}, frozenset({400}), complete=None, own=own,
                         counters=(str(counter),))  # fmt: skip
        return judge(tree.units["app.service"], hidden_pids=True)

    counter.write_text("3\n")
    monkeypatch.setattr(cgroups, "_pause", reaped_after_two_pauses)
    assert state() is UnitState.STOPPED and len(pauses) == 2
    counter.write_text("2\n")
    monkeypatch.setattr(cgroups, "_pause", lambda: None)
    assert state() is UnitState.RUNNING  # still above after SETTLE: a task is there

    def unreadable_meanwhile() -> None:
        counter.unlink()

    counter.write_text("2\n")
    monkeypatch.setattr(cgroups, "_pause", unreadable_meanwhile)
    assert state() is UnitState.RUNNING  # it said more, and nothing says less

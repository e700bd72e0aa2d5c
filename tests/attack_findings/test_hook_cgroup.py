"""Hostile tests of the hook's "unit stopped" proof from its own cgroup (issue 20).

Each test builds the cgroup tree a real kernel would show at one instant (a fake cgroup2 mount
in tmp_path, with /proc/self/mountinfo and /proc/self/cgroup answered from it) and asks
kernel.cgroups.unit_cgroups, exactly as the hook does, for the unit's state. Each asserts the
SAFE answer: a unit with a live process is RUNNING. A failure is a live unit judged stopped,
after which the hook removes every object of it whose creator exited and that nothing has
attached right now (PHP's attach-per-request segments).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.kernel import cgroups
from ipcjanitor.kernel.cgroups import judge, unit_cgroups
from ipcjanitor.model import UnitState

HOOK = 400  # the hook's own pid (excluded, as own_pids() excludes it)
LIVE = 500  # a live process of the unit (KillMode=process, a Delegate=yes payload)


def _fake_proc(
    monkeypatch: pytest.MonkeyPatch, root: Path, layout: dict[str, str], own: str
) -> None:
    for rel, procs in layout.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text(procs)
    (root / "cgroup.procs").write_text("1\n")
    mountinfo = root.parent / "mountinfo"
    mountinfo.write_text(f"30 1 0:26 / {root} rw,relatime - cgroup2 cgroup2 rw\n")
    own_cgroup = root.parent / "self_cgroup"
    own_cgroup.write_text(f"0::{own}\n")
    answers = {"/proc/self/mountinfo": mountinfo, "/proc/self/cgroup": own_cgroup}

    def fake_path(p: str) -> Path:
        return answers.get(str(p), Path(p))

    monkeypatch.setattr(cgroups, "Path", fake_path)


def _state(unit: str) -> UnitState | None:
    tree = unit_cgroups([unit], {}, frozenset({HOOK}), own_unit=unit)
    assert tree.blind is None, tree.blind
    return judge(tree.units.get(unit), hidden_pids=True)


def test_a_nested_directory_of_the_units_name_inside_its_delegated_subtree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delegate=yes: the payload owns app.service's subtree and may create any directory in it,
    `app.service/payload/app.service` too, and (cgroup v2 checks only write access to the
    common ancestor's cgroup.procs, which Delegate= gives it) move the hook from `.control`
    into it before the hook reads /proc/self/cgroup. unit_directory() takes the INNERMOST
    directory named after the unit, so the hook reads only that nested one."""
    root = tmp_path / "cg"
    layout = {
        "init.scope": "1\n",
        "system.slice/app.service": "",
        "system.slice/app.service/.control": "",
        "system.slice/app.service/payload": f"{LIVE}\n",  # the service, alive
        "system.slice/app.service/payload/app.service": f"{HOOK}\n",  # the hook, moved here
    }
    _fake_proc(monkeypatch, root, layout, "/system.slice/app.service/payload/app.service")
    assert _state("app.service") is UnitState.RUNNING


def test_a_hook_run_by_hand_from_a_users_unit_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo ipcjanitor hook --unit app.service` typed in a terminal whose process sits in the
    user's own manager's subtree, in a user unit that happens to be (or that the user, who
    owns user@1000.service's subtree, made) called app.service: the hook trusts that
    directory as the system's app.service and never looks at /system.slice/app.service."""
    root = tmp_path / "cg"
    user_unit = "user.slice/user-1000.slice/user@1000.service/app.slice/app.service"
    layout = {
        "init.scope": "1\n",
        "system.slice/app.service": f"{LIVE}\n",  # the system's app.service, running
        user_unit: f"{HOOK}\n",
    }
    _fake_proc(monkeypatch, root, layout, "/" + user_unit)
    # systemd gives user@1000.service's subtree to the user (Delegate=yes): theirs to shape
    delegated = root / "user.slice/user-1000.slice/user@1000.service"
    for d in [delegated, *(p for p in delegated.rglob("*") if p.is_dir())]:
        os.chown(d, 1000, 1000)
    assert _state("app.service") is UnitState.RUNNING


def test_a_process_moving_between_sub_cgroups_while_the_hook_walks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk reads one cgroup.procs after another; it is no snapshot. A unit's last live
    process that moves between two sub-cgroups of its own delegated subtree (a nested manager,
    a runtime placing its workers) is, in a valid history, in whichever directory the walk
    reads next-but-not-now: here it sits in the directory read second when the first is read,
    and has moved into the first before the second is read. The kernel has atomic counters the
    walk could check (pids.current of the unit's directory counts every task of its subtree,
    the hook's own included); this fake keeps them true to the history. Closed: the hook
    compares that count with its own threads (one, here)."""
    root = tmp_path / "cg"
    unit = "system.slice/app.service"
    layout = {
        "init.scope": "1\n",
        unit: "",
        f"{unit}/.control": f"{HOOK}\n",
        f"{unit}/payload/a": "",
        f"{unit}/payload/b": "",
    }
    _fake_proc(monkeypatch, root, layout, f"/{unit}/.control")
    for rel in (unit, f"{unit}/payload"):
        (root / rel / "pids.current").write_text("2\n")  # the hook and the mover, always
    read: list[str] = []
    real_procs = cgroups._procs

    def racing(directory: str) -> tuple[int, ...] | None:
        name = Path(directory).name
        if name in ("a", "b"):
            read.append(name)
            # first of a/b read: the mover is in the other one; it then moves into this one,
            # so the second read finds it gone from there
            return ()
        return real_procs(directory)

    monkeypatch.setattr(cgroups, "_procs", racing)
    monkeypatch.setattr(cgroups, "_own_tasks", lambda whose="self": 1, raising=False)
    assert _state("app.service") is UnitState.RUNNING
    assert sorted(read) == ["a", "b"]


def test_on_a_hybrid_host_the_v1_pids_hierarchy_counts_the_mover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This host's layout: cgroup2 (no controller) and the v1 `pids` hierarchy side by side.
    The walk of the v2 tree misses the mover as above; the unit's directory in the pids
    hierarchy, found from the hook's own line there, counts it."""
    root = tmp_path / "cg"
    unit = "system.slice/app.service"
    layout = {"init.scope": "1\n", unit: "", f"{unit}/.control": f"{HOOK}\n"}
    _fake_proc(monkeypatch, root, layout, f"/{unit}/.control")
    pids = tmp_path / "pids"
    (pids / unit).mkdir(parents=True)
    (pids / unit / "pids.current").write_text("2\n")  # the hook and the mover
    (tmp_path / "mountinfo").write_text(
        f"30 1 0:26 / {root} rw,relatime - cgroup2 cgroup2 rw\n"
        f"31 1 0:27 / {pids} rw,relatime - cgroup cgroup rw,pids\n"
    )
    (tmp_path / "self_cgroup").write_text(f"5:pids:/{unit}\n0::/{unit}/.control\n")
    monkeypatch.setattr(cgroups, "_own_tasks", lambda whose="self": 1, raising=False)
    assert _state("app.service") is UnitState.RUNNING
    (pids / unit / "pids.current").write_text("1\n")  # the hook alone: the walk decides
    assert _state("app.service") is UnitState.STOPPED


def test_control_the_fake_tree_answers_as_the_hook_expects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an attack: the same fake with the hook where systemd puts it (`.control`) sees the
    payload alive, and a unit holding only the hook stopped (the attacks above are real misses,
    not a broken fake)."""
    unit = "system.slice/app.service"
    layout = {"init.scope": "1\n", unit: "", f"{unit}/.control": f"{HOOK}\n"}
    _fake_proc(monkeypatch, tmp_path / "alone", layout, f"/{unit}/.control")
    assert _state("app.service") is UnitState.STOPPED
    layout[f"{unit}/payload"] = f"{LIVE}\n"
    _fake_proc(monkeypatch, tmp_path / "payload", layout, f"/{unit}/.control")
    assert _state("app.service") is UnitState.RUNNING


HELD = {
    # a hand-run hook from a root login's session: no directory of its path is named app.service
    "session": ("/user.slice/user-0.slice/session-1.scope", "app.service", {}),
    # ExecStopPost= of another unit naming app.service
    "other unit": ("/system.slice/other.service", "app.service", {}),
    # the unit named by an alias: its cgroup carries the primary name, the hook's too
    "alias": ("/system.slice/billing-worker.service", "billing.service",
              {"billing.service": "billing-worker.service"}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HELD))
def test_held_a_hook_outside_the_units_own_directory_walks_the_whole_tree(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own, unit, primary = HELD[case]
    real = primary.get(unit, unit)
    layout = {
        "init.scope": "1\n",
        own.strip("/"): f"{HOOK}\n",
    }
    running = f"system.slice/{real}"
    layout[running] = layout.get(running, "") + f"{LIVE}\n"  # the unit, running
    _fake_proc(monkeypatch, tmp_path / "cg", layout, own)
    tree = unit_cgroups([unit], primary, frozenset({HOOK}), own_unit=unit)
    assert tree.blind is None, tree.blind
    assert judge(tree.units.get(unit), hidden_pids=True) is UnitState.RUNNING

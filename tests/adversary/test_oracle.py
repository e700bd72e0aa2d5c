"""The oracle fed fabricated janitor output (no namespaces, no root): a removal or a stale
verdict of a held object must be a violation; of an unheld one, none."""

from __future__ import annotations

from pathlib import Path

from tests.adversary import oracle
from tests.adversary.world import Obj, World


def _world(tmp_path: Path) -> World:
    tmp_path.mkdir(exist_ok=True)
    world = World(tmp_path)
    world.objs["o1"] = Obj("o1", "shm", True, "w1", key=0x7A000001, id=5)
    world.objs["o2"] = Obj("o2", "posix-shm", True, "w1", name="adv2", ino=77)
    return world


def _doc(verdict: str) -> dict[str, object]:
    return {"objects": [
        {"kind": "shm", "id": 5, "verdict": verdict, "reason": "fabricated"},
        {"kind": "posix-shm", "inode": 77, "name": "adv2", "verdict": verdict, "reason": "x"},
    ]}  # fmt: skip


def test_a_fabricated_removal_of_held_objects_is_a_violation(tmp_path: Path) -> None:
    world = _world(tmp_path)
    held = {"o1": ["attached by w1 (pid 9)"], "o2": ["mapped by w1 (pid 9)"]}
    oracle.judge(world, _doc("removed"), held, "clean")
    assert [(v["what"], v["object"].split()[1]) for v in world.violations] == [
        ("removed while held", "o1"),
        ("removed while held", "o2"),
    ]
    assert world.objs["o1"].gone == "janitor"


def test_a_fabricated_stale_verdict_of_a_held_object_is_a_violation(tmp_path: Path) -> None:
    world = _world(tmp_path)
    oracle.judge(world, _doc("stale"), {"o1": ["attached by w1 (pid 9)"]}, "scan")
    assert [v["what"] for v in world.violations] == ["judged stale while held"]


def test_removing_what_nobody_holds_is_no_violation(tmp_path: Path) -> None:
    world = _world(tmp_path)
    oracle.judge(world, _doc("removed"), {"o1": [], "o2": []}, "clean")
    assert world.violations == [] and world.model_errors == []


def test_removing_an_unclaimed_object_is_a_violation(tmp_path: Path) -> None:
    world = _world(tmp_path)
    world.objs["o1"].claimed = False
    oracle.judge(world, _doc("removed"), {}, "clean")
    assert [v["what"] for v in world.violations] == ["removed an object no owner claims"]


YOUNGER = ("last receiver pid 11 is held by a process that started 3s after the object's last "
           "activity by the wall clock: PID reuse, unless the clock was stepped back and "
           "forward meanwhile, and not every step is known (...)")  # fmt: skip


def _kept(tmp_path: Path, recorded: dict[str, int], verdict: str, reason: str,
          clock_recorded: bool = False) -> str | None:  # fmt: skip
    world = _world(tmp_path / str(len(list(tmp_path.iterdir()))))
    world.clock_recorded = clock_recorded
    o = world.objs["o1"]
    o.recorded = recorded
    return oracle.by_contract(world, o, {"verdict": verdict, "reason": reason}, 11)


def test_a_reused_pid_unproven_without_a_clock_record_is_kept_by_contract(tmp_path: Path) -> None:
    """seed 1928572207: the final clean got the dead receiver's pid; with no record of the
    clock's steps the engine may not call it reused (issue 16, item 4)."""
    assert _kept(tmp_path, {"lspid": 7, "lrpid": 11}, "unknown", YOUNGER) is not None


def test_the_same_kept_with_a_complete_clock_record_is_dead_and_claimed(tmp_path: Path) -> None:
    assert _kept(tmp_path, {"lrpid": 11}, "unknown", YOUNGER, clock_recorded=True) is None


def test_a_younger_process_at_a_pid_not_recorded_keeps_nothing(tmp_path: Path) -> None:
    assert _kept(tmp_path, {"lrpid": 7}, "unknown", YOUNGER.replace("11", "7")) is None


def test_pid_1_the_namespaces_init_is_alive(tmp_path: Path) -> None:
    """seed 346027345: the harness (pid 1) dropped a dying worker's memory, detaching it."""
    reason = "last shmat/shmdt pid 1 is alive"
    assert _kept(tmp_path, {"cpid": 5, "lpid": 1}, "in-use", reason) is not None
    assert _kept(tmp_path, {"cpid": 5, "lpid": 9}, "in-use", reason) is None
    assert _kept(tmp_path, {"cpid": 5, "lpid": 1}, "unknown", "cannot tell whether") is None

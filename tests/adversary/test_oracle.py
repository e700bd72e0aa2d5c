"""The oracle fed fabricated janitor output (no namespaces, no root): a removal or a stale
verdict of a held object must be a violation; of an unheld one, none."""

from __future__ import annotations

from pathlib import Path

from tests.adversary import oracle
from tests.adversary.world import Obj, World


def _world(tmp_path: Path) -> World:
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

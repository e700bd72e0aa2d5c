"""ipcjanitor run at a point of the schedule, and what it did judged against what the world
knows: nothing a live process holds removed (or called stale), nothing unclaimed touched,
nothing gone without a reported removal, and at the end nothing dead and claimed left.

A clean runs either between two steps (the world holds still), or concurrently with the
steps that follow it until its join. Then an object counts as held for that clean only if
it was held at every look: before the clean started (or from its creation on), after every
step while the clean ran, and at the join. Every step's transitions are atomic in the
kernel (shmdt moves nattch and lpid under one lock, a semop moves sempid from one live
process to another), so held at every look means held all along.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.adversary import kernel, ops
from tests.adversary.world import SYSV, Obj, World

ROOT = Path(__file__).resolve().parent.parent.parent
POLICY = """\
min_age = "0s"
pid_namespace_complete = true

[owners.adversary]
keys = ["0x7a000000-0x7a00ffff"]
names = ["adv*"]
keep_queued_messages = false

[owners.adversary-unit]
unit = "adversary-app.service"
keys = ["0x7a100000-0x7a10ffff"]
names = ["bound*"]
keep_queued_messages = false
"""
# The unit the second owner is bound to: no systemd runs here, no cgroup bears its name, so
# to `clean` and to its hook (`ipcjanitor hook`, what its ExecStopPost= runs) it has stopped,
# while any worker may still hold that owner's objects, as leftovers of a stopped unit do.
UNIT = "adversary-app.service"
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
# What the contract allows a unit-less owner to keep when every process is gone: an object
# that records no pid at all carries no evidence (design.md, rule 6).
BY_CONTRACT = "records no pid, and its owner has no unit"


@dataclass
class Window:
    """A clean running concurrently with the steps."""

    proc: subprocess.Popen[str]
    command: str
    held: dict[str, list[str]]
    broken: set[str] = field(default_factory=set)
    steps: int = 0


def policy_path(world: World) -> Path:
    path = world.rundir / "policy.toml"
    if not path.exists():
        path.write_text(POLICY)
    return path


def argv(world: World, command: str, clock: dict[str, Any] | None) -> list[str]:
    brk = os.environ.get("ADVERSARY_BREAK")  # a deliberately broken janitor (broken.py)
    janitor = ["tests.adversary.broken", brk] if brk else ["ipcjanitor"]
    unit = [f"--unit={UNIT}"] if command == "hook" else []
    cmd = [sys.executable, "-m", *janitor, "--policy", str(policy_path(world)), command,
           *unit, "--json"]  # fmt: skip
    if not clock:
        return cmd
    if "wall" in clock:  # the wall clock stepped by `wall` s just before this run, back after
        return cmd  # libfaketime, preloaded by _env
    return ["unshare", "--fork", "--time", f"--monotonic={clock['monotonic']}",
            f"--boottime={clock['boottime']}", *cmd]  # fmt: skip


def _env(clock: dict[str, Any] | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if clock and "wall" in clock:  # libfaketime itself: its faketime(1) makes /dev/shm files
        env.update(
            LD_PRELOAD=LIBFAKETIME,
            FAKETIME=f"{clock['wall']:+d}s",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )  # only the wall clock steps; fmt: skip
    return env


def start(world: World, command: str, clock: dict[str, Any] | None) -> subprocess.Popen[str]:
    world.count(command if not clock else f"{command} (clock {sorted(clock)[0]})")
    return subprocess.Popen(
        argv(world, command, clock), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(clock), cwd=ROOT,
    )  # fmt: skip


def collect(world: World, proc: subprocess.Popen[str]) -> dict[str, Any] | None:
    out, err = proc.communicate(timeout=120)
    if not out.strip().startswith("{"):
        world.model_error(f"janitor rc {proc.returncode}, no JSON: {err.strip()[-400:]}")
        return None
    if proc.returncode not in (0,):
        world.model_error(f"janitor rc {proc.returncode}: {err.strip()[-400:]}")
    return json.loads(out)  # type: ignore[no-any-return]


def lookup(world: World, entry: dict[str, Any]) -> Obj | None:
    kind = entry["kind"]
    found = [
        o for o in world.objs.values()
        if o.kind == kind and (o.id == entry.get("id") if kind in SYSV else o.ino == entry.get("inode"))
    ]  # fmt: skip
    live = [o for o in found if o.gone is None]
    return (live or found)[0] if found else None


def judge(world: World, doc: dict[str, Any], held: dict[str, list[str]], command: str) -> None:
    for entry in doc["objects"]:
        o = lookup(world, entry)
        if o is None and entry.get("name", "").startswith("faketime_"):
            continue  # libfaketime's own, in the janitor's process
        if o is None:
            world.model_error(f"the janitor lists what the harness never made: {entry}")
            continue
        verdict, reason = entry["verdict"], entry["reason"]
        world.count(f"verdict {verdict}")
        if command.startswith("hook"):
            world.count(f"hook: {verdict}")
        holders = held.get(o.label, [])
        if command.startswith("hook") and not o.bound:
            world.violation("the hook judged an object of an owner not bound to its unit",
                            object=o.describe(), verdict=verdict, command=command)  # fmt: skip
        if verdict == "removed":
            o.gone, o.held_at_removal = "janitor", holders
            if not o.claimed:
                world.violation("removed an object no owner claims", object=o.describe())
            if holders:
                world.violation("removed while held", object=o.describe(), holders=holders,
                                reason=reason, command=command)  # fmt: skip
        elif verdict == "stale" and holders:
            world.violation("judged stale while held", object=o.describe(), holders=holders,
                            reason=reason, command=command)  # fmt: skip
        elif verdict == "failed":
            world.model_error(f"removal failed: {o.describe()}: {reason}")


def check_presence(world: World) -> None:
    for o in world.objs.values():
        if o.gone is None and (o.id is not None or o.ino is not None) and not ops.present(o):
            world.violation("an object vanished without a reported removal", object=o.describe())


def run(world: World, command: str, clock: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A clean or scan between two steps."""
    held = world.snapshot()
    doc = collect(world, start(world, command, clock))
    if doc is not None:
        judge(world, doc, held, command + (f" {clock}" if clock else ""))
    world.settle(lambda *a: ops.finish(world, *a))  # waiters a removal woke (EIDRM)
    check_presence(world)
    return doc


def begin(world: World) -> Window:
    held = world.snapshot()
    window = Window(start(world, "clean", None), "clean (concurrent)", held)
    window.broken = {label for label, h in held.items() if not h}
    world.deferred = []
    return window


def look(world: World, window: Window) -> None:
    """After each step while the clean runs."""
    window.steps += 1
    for label, h in world.snapshot().items():
        if not h:
            window.broken.add(label)
        else:  # made while the clean ran: held from its first look on
            window.held[label] = h  # the latest holders, for the report


def join(world: World, window: Window) -> None:
    doc = collect(world, window.proc)
    held = {label: h for label, h in window.held.items() if label not in window.broken}
    if doc is not None:
        raced = [e for e in doc["objects"] if e["verdict"] == "removed"]
        for e in raced:
            o = lookup(world, e)
            if o is not None and o.label in window.broken and o.label in window.held:
                world.count("removed after its holding changed during the clean")
        judge(world, doc, held, window.command)
    deferred, world.deferred = world.deferred or [], None
    for w, cmd, reply, o in deferred:
        ops.classify_error(world, w, cmd, reply, o)
    world.settle(lambda *a: ops.finish(world, *a))
    check_presence(world)


def final(world: World) -> list[dict[str, Any]]:
    """Every worker exits (a blocked one is killed); then one clean must leave nothing dead
    and claimed. Returns what it kept, with verdict and reason."""
    for w in world.live():
        world.end(w, "kill" if w.pending is not None else "exit")
    time.sleep(0.01)
    proc = start(world, "clean", None)
    doc = collect(world, proc)
    if doc is None:
        return []
    judge(world, doc, {}, "final clean")
    shm, msg = kernel.shm_table(), kernel.msg_table()
    kept = []
    for entry in doc["objects"]:
        o = lookup(world, entry)
        if o is None or not o.claimed or entry["verdict"] == "removed":
            continue
        item = {"object": o.describe(), "verdict": entry["verdict"], "reason": entry["reason"]}
        kept.append(item)
        world.read_recorded(o, shm, msg)
        why = by_contract(world, o, entry, proc.pid)
        if why is not None:
            world.count(f"kept at the end by contract ({why})")
        else:
            world.violation("dead and claimed, kept at the end", **item)
    return kept


def by_contract(world: World, o: Obj, entry: dict[str, Any], janitor: int) -> str | None:
    """Why the contract keeps o at the end, every worker gone (None: it must not be kept).

    Only two processes live then: the namespace's init (the harness, pid 1) and the final
    clean itself. Either may be a pid o records: pid 1 when the last reference to a dying
    worker's memory was dropped by the harness reading its /proc/PID/stat (the kernel
    detaches the segment then, in the reader's name: lpid 1), the janitor's own when the
    namespace handed it a recorder's pid. A live pid is live (design.md, rule 3); a live
    process younger than the object proves the pid reused only while every step of the wall
    clock is on record (issue 16, item 4): World.clock_recorded, never here.
    """
    verdict, reason = entry["verdict"], entry["reason"]
    if BY_CONTRACT in reason:  # an object that records no pid carries no evidence (rule 6)
        return "records no pid"
    live = {pid for pid in o.recorded.values() if pid in (1, janitor)}
    if 1 in live and verdict == "in-use" and "pid 1 is alive" in reason:
        return "a recorded pid is the namespace's init, pid 1"
    if janitor in live and verdict == "in-use" and f"pid {janitor} is alive" in reason:
        return "a dead pid now the janitor's own, within the reuse margin"
    younger = f"pid {janitor} is held by a process that started"
    unproven = verdict == "unknown" and younger in reason and not world.clock_recorded
    if janitor in live and unproven:
        return "a dead pid now the janitor's own, and no complete clock record"
    return None

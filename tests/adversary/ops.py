"""The steps of a schedule: what each one asks of which worker, and what its answer means.

A step names workers, objects and handles by the harness's labels (w3, o7, h12), never by pid
or id, so a schedule replays on a fresh namespace. A step whose preconditions do not hold
when it comes (its worker is dead, its object gone) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.adversary import kernel
from tests.adversary.world import SYSV, HarnessError, Obj, Worker, World

Step = dict[str, Any]
CLAIMED_KEYS, BOUND_KEYS, FREE_KEYS = 0x7A000000, 0x7A100000, 0x7B000000
NOWAIT_FAILURES = {"EAGAIN", "ENOMSG"}
HOW = {"shm_at": "attached", "pshm_open": "fd", "pshm_map": "mapped", "psem_open": "sem_open",
       "mq_open": "mq fd"}  # fmt: skip
RELEASE = {"attached": "shm_dt", "fd": "close", "mapped": "unmap", "sem_open": "psem_close",
           "mq fd": "close"}  # fmt: skip


def new_obj(label: str, kind: str, claimed: bool, creator: str, nsems: int, *,
            bound: bool = False) -> Obj:  # fmt: skip
    """An object by the key or name of one of the policy's owners (bound: the unit's), or
    of none."""
    n = int(label[1:])
    bound = bound and claimed
    o = Obj(label, kind, claimed, creator, nsems=nsems, bound=bound)
    if kind in SYSV:
        o.key = (BOUND_KEYS if bound else CLAIMED_KEYS if claimed else FREE_KEYS) + n
    else:
        o.name = f"{'bound' if bound else 'adv' if claimed else 'free'}{n}"
    return o


def finish(world: World, w: Worker, cmd: dict[str, Any], reply: dict[str, Any], label: str) -> None:
    """What a worker's answer changes: its holdings, the pids it recorded, an error's meaning."""
    o = world.objs.get(label)
    if reply is None:
        world.model_error(f"{w.label} died answering {cmd}")
        return
    if not reply["ok"]:
        _error(world, w, cmd, reply, o)
        return
    world.count("ops ok")
    if o is not None:
        _effects(w, cmd, reply["v"], o)


def _effects(w: Worker, cmd: dict[str, Any], v: int, o: Obj) -> None:
    op = cmd["op"]
    if op in HOW:
        w.handles[cmd["h"]] = (HOW[op], o.label)
    if op in ("shm_create", "sem_create", "msg_create"):
        o.id = v
    if op in ("pshm_open", "psem_open", "mq_open") and o.ino is None:
        o.ino = kernel.inode(o.path())
    if op in ("shm_dt", "unmap", "close", "psem_close"):
        w.handles.pop(cmd["h"], None)
    recorded = {"shm_create": "cpid", "shm_at": "lpid", "shm_dt": "lpid", "msgsnd": "lspid",
                "msgrcv": "lrpid"}.get(op)  # fmt: skip
    if op in ("semop", "setval"):
        recorded = f"sem{cmd['num']}"
    if op == "msgfill" and v > 0:
        recorded = "lspid"
    if recorded:
        w.acted.add((o.label, recorded))
    o.count += {"psem_post": 1, "psem_wait": -1, "mq_send": 1, "mq_recv": -1}.get(op, 0)
    if op in ("rmid", "unlink"):
        o.gone = "program"


def _error(
    world: World, w: Worker, cmd: dict[str, Any], reply: dict[str, Any], o: Obj | None
) -> None:
    if cmd.get("nowait") and reply["err"] in NOWAIT_FAILURES:
        world.count("nowait refused")
        return
    if world.deferred is not None:  # a clean runs: whether it removed o is not known yet
        world.deferred.append((w, cmd, reply, o))
        return
    classify_error(world, w, cmd, reply, o)


def classify_error(
    world: World, w: Worker, cmd: dict[str, Any], reply: dict[str, Any], o: Obj | None
) -> None:
    what = f"{w.label} (pid {w.pid}) {cmd} -> {reply['err']} ({reply['what']})"
    if o is None:
        world.model_error(f"error on no known object: {what}")
    elif o.gone == "janitor" and o.held_at_removal:
        world.violation(
            f"a live process got {reply['err']} on an object it held",
            object=o.describe(), error=what, holders=o.held_at_removal,
        )  # fmt: skip
    elif o.gone == "janitor":
        world.count("error after a removal of an unheld object")
    elif o.gone == "program":
        world.count("error after the program's own removal")
    elif not present(o):
        world.violation(
            "an object vanished without a reported removal", object=o.describe(), error=what
        )
    else:
        world.model_error(f"unexplained error: {what}")


def present(o: Obj) -> bool:
    if o.kind == "shm":
        table: dict[int, Any] = kernel.shm_table()
    elif o.kind == "sem":
        table = kernel.sem_table()
    elif o.kind == "msg":
        table = kernel.msg_table()
    else:
        return o.ino is not None and kernel.inode(o.path()) == o.ino
    return o.id in table and table[o.id].key == o.key


# the steps --------------------------------------------------------------------------------
def _idle(world: World, s: Step) -> Worker | None:
    w = world.workers.get(s["w"])
    return w if w is not None and w.idle() else None


def _obj(world: World, s: Step, kinds: tuple[str, ...] | None = None) -> Obj | None:
    o = world.objs.get(s["o"])
    made = o is not None and (o.id is not None or o.ino is not None)
    if not made or o is None or o.gone or (kinds and o.kind not in kinds):
        return None
    return o


def _send(world: World, w: Worker, cmd: dict[str, Any], label: str,
          calls: frozenset[int] = frozenset()) -> None:  # fmt: skip
    reply = world.call(w, cmd, label, calls)
    if reply is not None:
        finish(world, w, cmd, reply, label)
    else:
        world.count("blocked")


def spawn(world: World, s: Step) -> bool:
    if s["w"] in world.workers:
        return False
    world.spawn(s["w"], s.get("reuse"))
    return True


def fork(world: World, s: Step) -> bool:
    parent = _idle(world, s)
    if parent is None or s["child"] in world.workers:
        return False
    world.fork(parent, s["child"], s.get("reuse"))
    return True


def end(world: World, s: Step) -> bool:
    w = world.workers.get(s["w"])
    if w is None or not w.alive or (s["op"] == "exit" and w.pending is not None):
        return False
    world.end(w, s["op"])
    world.count(s["op"])
    return True


def create(world: World, s: Step) -> bool:
    w = _idle(world, s)
    if w is None or s["o"] in world.objs:
        return False
    o = new_obj(
        s["o"], s["kind"], s["claimed"], w.label, s.get("nsems", 0), bound=s.get("bound", False)
    )
    if s.get("same_name"):  # the key or name of an object gone since: a new one by that name
        old = world.objs.get(s["same_name"])
        if old is None or old.gone is None or old.kind != o.kind or taken(world, old):
            return False
        o.key, o.name, o.claimed, o.bound = old.key, old.name, old.claimed, old.bound
    world.objs[o.label] = o
    cmd: dict[str, Any] = {
        "shm": {"op": "shm_create", "key": o.key},
        "sem": {"op": "sem_create", "key": o.key, "nsems": o.nsems},
        "msg": {"op": "msg_create", "key": o.key},
        "posix-shm": {"op": "pshm_open", "name": o.name, "h": s.get("h"), "create": True},
        "posix-sem": {"op": "psem_open", "name": o.name, "h": s.get("h"), "create": True},
        "posix-mq": {"op": "mq_open", "name": o.name, "h": s.get("h"), "create": True},
    }[o.kind]
    _send(world, w, cmd, o.label)
    return True


def taken(world: World, old: Obj) -> bool:
    """Whether an object still there has old's key or name (made by an earlier same_name)."""
    return any(
        o.kind == old.kind and (o.key, o.name) == (old.key, old.name) and o.gone is None
        for o in world.objs.values()
    )


def attach(world: World, s: Step) -> bool:
    w, o = _idle(world, s), _obj(world, s, ("shm", "posix-shm", "posix-sem", "posix-mq"))
    if w is None or o is None or s["h"] in w.handles:
        return False
    if o.kind == "shm":
        cmd: dict[str, Any] = {"op": "shm_at", "id": o.id, "h": s["h"]}
    elif o.kind == "posix-shm" and s.get("how") == "fd":
        cmd = {"op": "pshm_open", "name": o.name, "h": s["h"], "create": False}
    elif o.kind == "posix-shm":
        cmd = {"op": "pshm_map", "name": o.name, "h": s["h"]}
    else:
        cmd = {"op": "psem_open" if o.kind == "posix-sem" else "mq_open", "name": o.name,
               "h": s["h"], "create": False}  # fmt: skip
    _send(world, w, cmd, o.label)
    return True


def release(world: World, s: Step) -> bool:
    w = _idle(world, s)
    if w is None or s["h"] not in w.handles:
        return False
    how, label = w.handles[s["h"]]
    _send(world, w, {"op": RELEASE[how], "h": s["h"]}, label)
    return True


def semop(world: World, s: Step) -> bool:
    w, o = _idle(world, s), _obj(world, s, ("sem",))
    if w is None or o is None:
        return False
    cmd = {"op": "semop", "id": o.id, "num": s["num"] % o.nsems, "delta": s["delta"],
           "undo": s["undo"], "nowait": s["nowait"]}  # fmt: skip
    _send(world, w, cmd, o.label, kernel.SEMOP_CALLS)
    return True


def setval(world: World, s: Step) -> bool:
    w, o = _idle(world, s), _obj(world, s, ("sem",))
    if w is None or o is None:
        return False
    _send(world, w, {"op": "setval", "id": o.id, "num": s["num"] % o.nsems, "val": s["val"]},
          o.label)  # fmt: skip
    return True


def msg(world: World, s: Step) -> bool:
    w, o = _idle(world, s), _obj(world, s, ("msg",))
    if w is None or o is None:
        return False
    if s["op"] == "msgsnd":
        cmd: dict[str, Any] = {"op": "msgsnd", "id": o.id, "size": s["size"], "nowait": s["nowait"]}
        calls = frozenset({kernel.MSGSND})
    elif s["op"] == "msgrcv":
        cmd, calls = {"op": "msgrcv", "id": o.id, "nowait": s["nowait"]}, frozenset({kernel.MSGRCV})
    else:
        cmd, calls = {"op": "msgfill", "id": o.id}, frozenset()
    _send(world, w, cmd, o.label, calls)
    return True


def by_handle(world: World, s: Step) -> bool:
    """psem_post / psem_wait / mq_send / mq_recv through a handle the worker holds."""
    w = _idle(world, s)
    if w is None or s["h"] not in w.handles:
        return False
    label = w.handles[s["h"]][1]
    o = world.objs[label]
    kinds = {"psem_post": "posix-sem", "psem_wait": "posix-sem", "mq_send": "posix-mq",
             "mq_recv": "posix-mq"}  # fmt: skip
    if o.kind != kinds[s["op"]]:
        return False
    cmd: dict[str, Any] = {"op": s["op"], "h": s["h"]}
    if s["op"] == "psem_wait":
        cmd["nowait"] = s["nowait"]
    calls = {"psem_wait": kernel.FUTEX, "mq_send": kernel.MQ_SEND, "mq_recv": kernel.MQ_RECV}
    _send(world, w, cmd, label, frozenset({calls[s["op"]]}) if s["op"] in calls else frozenset())
    return True


def rm(world: World, s: Step) -> bool:
    """The program removes its own object, as a well-behaved one does."""
    w, o = _idle(world, s), _obj(world, s)
    if w is None or o is None:
        return False
    if o.kind in SYSV:
        cmd: dict[str, Any] = {"op": "rmid", "kind": o.kind, "id": o.id}
    else:
        cmd = {"op": "unlink", "kind": o.kind, "name": o.name}
    _send(world, w, cmd, o.label)
    return True


def leader_exit(world: World, s: Step) -> bool:
    """The worker's main thread ends; another thread serves from now on."""
    w = _idle(world, s)
    if w is None or w.tid is not None:
        return False
    reply = world.call(w, {"op": "leader_exit"})
    if reply is None or not reply["ok"]:
        raise HarnessError(f"{w.label}: leader_exit answered {reply}")
    w.tid = int(reply["v"])
    world.count("leader exited")
    return True


def touch(world: World, s: Step) -> bool:
    w = _idle(world, s)
    if w is None:
        return False
    _send(world, w, {"op": "touch"}, "")
    return True


STEPS: dict[str, Callable[[World, Step], bool]] = {
    "spawn": spawn, "fork": fork, "exit": end, "kill": end, "create": create,
    "attach": attach, "release": release, "semop": semop, "setval": setval,
    "msgsnd": msg, "msgrcv": msg, "msgfill": msg, "psem_post": by_handle,
    "psem_wait": by_handle, "mq_send": by_handle, "mq_recv": by_handle, "rm": rm,
    "touch": touch, "leader_exit": leader_exit,
}  # fmt: skip

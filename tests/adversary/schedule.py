"""Random schedules: each next step drawn from what the world looks like now, from a seed.

The same seed on the same world gives the same schedule; what a run executed is recorded as
a list of steps, so a failing schedule replays (and shrinks) without the generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.adversary.ops import Step, taken
from tests.adversary.world import Obj, Worker, World

MAX_LIVE = 6
# Two gaps this harness found are closed, and the generator draws into both: a forward step
# of the wall clock with no clock record (regressions/wall-step-without-a-record.json, issue
# 16 item 4), and a live process whose thread-group leader has ended holding POSIX objects
# (regressions/leader-exited-posix-holder.json).
KINDS = ("shm", "sem", "msg", "posix-shm", "posix-sem", "posix-mq")
CLOCKS: tuple[dict[str, int], ...] = (
    {"wall": 1800},  # a forward step of the wall clock, just before the run (back after it)
    {"wall": 7200},
    {"wall": -1800},
    {"monotonic": -600, "boottime": 3600},  # a time namespace of the janitor's own
    {"monotonic": 3600, "boottime": -600},
)


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = {"w": 0, "o": 0, "h": 0}
        self.window_left = 0  # steps until the concurrent clean is joined; 0: none runs
        self.plan: list[Step] = []  # the rest of a motif, taken before anything new is drawn

    def label(self, prefix: str) -> str:
        self.n[prefix] += 1
        return f"{prefix}{self.n[prefix]}"

    def next(self, world: World) -> Step:
        if self.window_left == 1:
            self.window_left = 0
            return {"op": "clean_join"}
        if self.window_left:
            self.window_left -= 1
        if self.plan:
            return self.plan.pop(0)
        choices = self._choices(world)
        total = sum(weight for weight, _ in choices)
        pick = self.rng.uniform(0, total)
        for weight, make in choices:
            pick -= weight
            if pick <= 0:
                return make()
        return choices[-1][1]()

    def _choices(self, world: World) -> list[tuple[float, Callable[[], Step]]]:
        live = world.live()
        idle = [w for w in live if w.idle()]
        dead = [w for w in world.workers.values() if not w.alive]
        out: list[tuple[float, Callable[[], Step]]] = []
        if len(live) < MAX_LIVE:
            out.append((3 if len(live) > 1 else 30, lambda: {"op": "spawn", "w": self.label("w")}))
            if dead:
                out.append((2, lambda: {"op": "spawn", "w": self.label("w"),
                                        "reuse": self.rng.choice(dead).label}))  # fmt: skip
        if live and (len(live) > 2 or not idle):
            out.append((2, lambda: {"op": "kill", "w": self.rng.choice(live).label}))
        if idle:
            out += self._worker_steps(world, idle, dead, len(live) < MAX_LIVE)
        out += self._janitor_steps()
        return out

    def _worker_steps(
        self, world: World, idle: list[Worker], dead: list[Worker], room: bool
    ) -> list[tuple[float, Callable[[], Step]]]:
        rng = self.rng
        worker = rng.choice(idle)
        w = worker.label
        out: list[tuple[float, Callable[[], Step]]] = [
            (5, lambda: self._create(w)),
            (1, lambda: self._recreate(world, w)),
            (1, lambda: {"op": "touch", "w": w}),
            (1.5, lambda: self._motif(MOTIFS[rng.randrange(len(MOTIFS))](self, w))),
        ]
        if worker.tid is None:
            out.append((0.7, lambda: {"op": "leader_exit", "w": w}))
        if room:
            out.append((2, lambda: {"op": "fork", "w": w, "child": self.label("w")}))
            if dead:
                out.append((1, lambda: {"op": "fork", "w": w, "child": self.label("w"),
                                        "reuse": rng.choice(dead).label}))  # fmt: skip
        if len(world.live()) > 2:
            out.append((2, lambda: {"op": "exit", "w": w}))
        objs = [
            o
            for o in world.objs.values()
            if o.gone is None and (o.id is not None or o.ino is not None)
        ]
        out += self._object_steps(w, objs)
        handles = world.workers[w].handles
        if handles:
            out += self._handle_steps(w, world, handles)
        return out

    def _motif(self, steps: list[Step]) -> Step:
        self.plan = steps[1:]
        return steps[0]

    def _create(self, w: str, kind: str | None = None) -> Step:
        kind = kind or self.rng.choice(KINDS)
        step: Step = {"op": "create", "w": w, "o": self.label("o"), "kind": kind,
                      "claimed": self.rng.random() < 0.9}  # fmt: skip
        if step["claimed"] and self.rng.random() < 0.35:  # the unit's owner's: its hook's
            step["bound"] = True
        if kind == "sem":
            step["nsems"] = self.rng.choice((1, 2, 3))
        if kind.startswith("posix"):
            step["h"] = self.label("h")
        return step

    def _recreate(self, world: World, w: str) -> Step:
        """A new object by the key or name of one gone (removed by its program or by us)."""
        gone = [o for o in world.objs.values() if o.gone and not taken(world, o)]
        if not gone:
            return self._create(w)
        old = self.rng.choice(gone)
        step = self._create(w, old.kind)
        step["same_name"] = old.label
        return step

    def _object_steps(self, w: str, objs: list[Obj]) -> list[tuple[float, Callable[[], Step]]]:
        rng = self.rng
        of = {k: [o.label for o in objs if o.kind == k] for k in KINDS}
        out: list[tuple[float, Callable[[], Step]]] = []
        attachable = of["shm"] + of["posix-shm"] + of["posix-sem"] + of["posix-mq"]
        if attachable:
            out.append((5, lambda: {"op": "attach", "w": w, "o": rng.choice(attachable),
                                    "h": self.label("h"), "how": rng.choice(("map", "fd"))}))  # fmt: skip
        if of["sem"]:
            out.append((6, lambda: {"op": "semop", "w": w, "o": rng.choice(of["sem"]),
                                    "num": rng.randrange(3), "delta": rng.choice((-1, -1, 1, 1, 0)),
                                    "undo": rng.random() < 0.15, "nowait": rng.random() < 0.15}))  # fmt: skip
            out.append((1, lambda: {"op": "setval", "w": w, "o": rng.choice(of["sem"]),
                                    "num": rng.randrange(3), "val": rng.choice((0, 1, 2))}))  # fmt: skip
        if of["msg"]:
            out.append((3, lambda: {"op": "msgsnd", "w": w, "o": rng.choice(of["msg"]),
                                    "size": rng.choice((16, 1024, 6000)), "nowait": rng.random() < 0.15}))  # fmt: skip
            out.append((3, lambda: {"op": "msgrcv", "w": w, "o": rng.choice(of["msg"]),
                                    "nowait": rng.random() < 0.15}))  # fmt: skip
            out.append((0.5, lambda: {"op": "msgfill", "w": w, "o": rng.choice(of["msg"])}))
        if objs:
            out.append((0.7, lambda: {"op": "rm", "w": w, "o": rng.choice(objs).label}))
        return out

    def _handle_steps(
        self, w: str, world: World, handles: dict[str, tuple[str, str]]
    ) -> list[tuple[float, Callable[[], Step]]]:
        rng = self.rng
        hs = sorted(handles)
        kind = {h: world.objs[label].kind for h, (_, label) in handles.items()}
        sems = [h for h in hs if kind[h] == "posix-sem"]
        mqs = [h for h in hs if kind[h] == "posix-mq"]
        out: list[tuple[float, Callable[[], Step]]] = [
            (4, lambda: {"op": "release", "w": w, "h": rng.choice(hs)})
        ]
        if sems:
            out.append((3, lambda: {"op": "psem_post", "w": w, "h": rng.choice(sems)}))
            out.append((3, lambda: {"op": "psem_wait", "w": w, "h": rng.choice(sems),
                                    "nowait": rng.random() < 0.2}))  # fmt: skip
        if mqs:
            out.append((3, lambda: {"op": "mq_send", "w": w, "h": rng.choice(mqs)}))
            out.append((3, lambda: {"op": "mq_recv", "w": w, "h": rng.choice(mqs)}))
        return out

    def _janitor_steps(self) -> list[tuple[float, Callable[[], Step]]]:
        if self.window_left:
            return []
        return [
            (3, lambda: {"op": "clean"}),
            (1, lambda: {"op": "scan"}),
            (2, lambda: {"op": "hook"}),  # the unit's ExecStopPost= after a stop
            (1.2, self._concurrent),
            (1, lambda: {"op": "clean", "clock": self._clock()}),
            (0.25, lambda: {"op": "sleep", "s": 2.5}),
        ]

    def _clock(self) -> dict[str, int]:
        return dict(self.rng.choice(CLOCKS))

    def _concurrent(self) -> Step:
        self.window_left = self.rng.randint(2, 6)
        return {"op": "clean_start"}


# Motifs: short plans that reach a state where one kind of evidence alone shows a holder,
# which free drawing reaches only now and then. Each is a list of ordinary steps.
def _inherited(g: Generator, w: str) -> list[Step]:
    """Only a child's inherited attachment or mapping holds the object: its parent exits."""
    kind = g.rng.choice(("shm", "posix-shm", "posix-sem"))
    made = g._create(w, kind)
    made["claimed"] = True
    o, child = made["o"], g.label("w")
    steps = [made, {"op": "attach", "w": w, "o": o, "h": g.label("h"), "how": "map"}]
    if "h" in made:
        steps.append({"op": "release", "w": w, "h": made["h"]})
    return [*steps, {"op": "fork", "w": w, "child": child}, {"op": "exit", "w": w}]


def _lone_waiter(g: Generator, w: str) -> list[Step]:
    """Only a task blocked on it holds the object: whoever recorded a pid there has died."""
    kind = g.rng.choice(("msg", "sem", "sem0", "posix-mq"))
    made = g._create(w, kind.rstrip("0"))
    made.update(claimed=True, nsems=1)
    o, other = made["o"], g.label("w")
    if kind == "msg":
        use = [{"op": "msgsnd", "w": w, "o": o, "size": 16, "nowait": False},
               {"op": "msgrcv", "w": w, "o": o, "nowait": False}]  # fmt: skip
        wait: Step = {"op": "msgrcv", "w": other, "o": o, "nowait": False}
    elif kind.startswith("sem"):
        use = [
            {"op": "semop", "w": w, "o": o, "num": 0, "delta": 1, "undo": False, "nowait": False}
        ]
        wait = {"op": "semop", "w": other, "o": o, "num": 0, "delta": -2 if kind == "sem" else 0,
                "undo": False, "nowait": False}  # fmt: skip
    else:
        h = g.label("h")
        use = [{"op": "attach", "w": other, "o": o, "h": h}]
        wait = {"op": "mq_recv", "w": other, "h": h}
    spawn = {"op": "spawn", "w": other}
    if kind == "posix-mq":
        return [made, spawn, *use, wait, {"op": "kill", "w": w}]
    return [made, *use, spawn, wait, {"op": "kill", "w": w}]


def _reused(g: Generator, w: str) -> list[Step]:
    """The recorder dies, a new process gets its pid after the margin; it acts, or not."""
    kind = g.rng.choice(("shm", "sem", "msg"))
    made = g._create(w, kind)
    made.update(claimed=True, nsems=1)
    o, new = made["o"], g.label("w")
    act = {
        "shm": {"op": "attach", "w": new, "o": o, "h": g.label("h")},
        "sem": {
            "op": "semop",
            "w": new,
            "o": o,
            "num": 0,
            "delta": 1,
            "undo": False,
            "nowait": False,
        },
        "msg": {"op": "msgsnd", "w": new, "o": o, "size": 16, "nowait": False},
    }[kind]
    first = dict(act, w=w) if kind != "shm" else {"op": "touch", "w": w}
    steps = [made, first, {"op": "exit", "w": w}, {"op": "sleep", "s": 2.5},
             {"op": "spawn", "w": new, "reuse": w}]  # fmt: skip
    if g.rng.random() < 0.7:
        steps.append(act)
    return [*steps, {"op": "clean"}]


MOTIFS: tuple[Callable[[Generator, str], list[Step]], ...] = (_inherited, _lone_waiter, _reused)

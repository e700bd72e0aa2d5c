"""PURE: objects + process facts + policy + now -> one verdict and reason per object.

The rules run in the contract's order, and the first that applies gives the verdict:
ownership, the owner is alive, the object shows life, idle time, queued data, proof of death.
Nothing here reads a clock, a file or the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from ..model import (
    BASE_REUSE_MARGIN,
    Decision,
    HostFacts,
    IpcKind,
    IpcObject,
    PosixDecision,
    PosixKind,
    PosixObject,
    Presence,
    UnitState,
    Verdict,
)
from ..policy.model import Owner, Policy, format_duration, user
from ..policy.names import to_regex
from . import unowned

# A process is "younger than the object" only when it started more than the margin after the
# object's newest timestamp (facts.reuse_margin, at least this). Closer than that, it is taken
# to be the same process.
PID_REUSE_MARGIN = BASE_REUSE_MARGIN


class PosixFacts(NamedTuple):
    """What the processes say about the POSIX candidates, read once per run."""

    holders: Mapping[tuple[int, int], tuple[str, ...]]  # by (dev, ino): how each is held
    blind: str | None = None  # why a holder may have escaped (kernel/holders.py)
    units: Mapping[str, UnitState] = MappingProxyType({})
    unit_blind: str | None = None  # why a unit's processes may be invisible
    unit_names: Mapping[str, str] = MappingProxyType({})  # alias -> primary (HostFacts)


class _PidView(NamedTuple):
    """One distinct pid of an object, with every role it plays there and what became of it."""

    pid: int
    roles: tuple[str, ...]
    fate: str  # "alive", "dead", "unknown"
    detail: str

    def describe(self) -> str:
        return f"{_roles(self.roles)} pid {self.pid} {self.detail}"


def _roles(roles: tuple[str, ...]) -> str:
    sems = [r.rsplit(" ", 1)[1] for r in roles if r.startswith("last semop on sem ")]
    other = [r for r in roles if not r.startswith("last semop on sem ")]
    if sems:
        other.append(
            ("last semop on sem " if len(sems) == 1 else "last semop on sems ") + ",".join(sems)
        )
    return "/".join(other)


def _pid_views(obj: IpcObject, facts: HostFacts, last: int) -> tuple[list[_PidView], list[str]]:
    """Distinct recorded pids with their fate, and the reasons a zero pid cannot be trusted.

    A zero beside the trace of the act that would have recorded it is a hidden pid. Any other
    zero means "none recorded", unless we run outside the host's pid namespace and the
    object's own times do not prove that nobody ever used it (facts.hidden_pids).
    """
    by_pid: dict[int, list[str]] = {}
    doubts: list[str] = []
    for rec in obj.pids:
        if rec.pid > 0:
            by_pid.setdefault(rec.pid, []).append(rec.role)
        elif rec.role == "creator":
            doubts.append("creator pid reads 0: the creator is outside our pid namespace")
        elif rec.traced:
            doubts.append(
                f"{rec.role} pid reads 0 although {_trace(rec.role)}: that process is hidden "
                "from our pid namespace"
            )
        elif facts.hidden_pids is not None and not obj.never_used:
            doubts.append(f"{rec.role} pid reads 0, which may hide a pid ({facts.hidden_pids})")
    views = [_fate(pid, tuple(roles), last, facts) for pid, roles in by_pid.items()]
    return views, doubts


def _trace(role: str) -> str:
    """What the object shows of the act that records a pid in `role`."""
    if role.startswith("last semop"):
        return "its value is not 0"
    return {
        "last shmat/shmdt": "the segment was attached",
        "last sender": "a message was sent",
        "last receiver": "a message was received",
    }.get(role, "the object records that act")


def _fate(pid: int, roles: tuple[str, ...], last: int, facts: HostFacts) -> _PidView:
    """What became of one pid, judged against the object's last activity `last`."""
    note = _note(pid, last, facts) if facts.pid_notes else None
    info = facts.processes.get(pid)
    if info is None:
        return _PidView(pid, roles, "unknown", "was not looked up")
    if info.presence is Presence.ABSENT:
        return _PidView(pid, roles, "dead", note or "exited")
    if info.presence is Presence.ZOMBIE:
        return _PidView(pid, roles, "dead", note or "exited (zombie, not yet reaped)")
    if info.presence is Presence.HIDDEN or info.start_time is None:
        return _PidView(pid, roles, "unknown", f"cannot be inspected ({info.detail})")
    younger_by = info.start_time - last
    if younger_by <= facts.reuse_margin:
        return _PidView(pid, roles, "alive", "is alive")
    covered = facts.clock_covered_from
    if covered is None or info.start_time < covered:  # a step unrecorded could explain it
        return _PidView(
            pid,
            roles,
            "unknown",
            f"is held by a process that started {format_duration(younger_by)} after the "
            "object's last activity by the wall clock: PID reuse, unless the clock was stepped "
            f"back and forward meanwhile, and not every step is known ({facts.clock_gap})",
        )
    return _PidView(
        pid,
        roles,
        "dead",
        f"exited (the pid now belongs to a process started {format_duration(younger_by)} "
        "after the object's last activity)",
    )


def _note(pid: int, last: int, facts: HostFacts) -> str | None:
    """systemd's word on a pid, if it speaks of the process that acted on this object."""
    start, note = facts.pid_notes.get(pid, (None, ""))
    if not note or (start is not None and start - last > facts.reuse_margin):
        return None
    return note


def _unowned_reason(obj: IpcObject, policy: Policy) -> str:
    """What no owner claims, and for a near miss, what differs and what to write."""
    return unowned.reason(obj, policy)


def _blind_spots(
    obj: IpcObject, facts: HostFacts, unit: str | None, unit_state: UnitState | None
) -> list[str]:
    """What this run could not see that could still use the object: a queue's waiters, the
    owner's unit."""
    spots = []
    if obj.kind is IpcKind.MSG:
        if facts.queue_waiters is None:
            spots.append("no task was inspected for a waiter in msgrcv/msgsnd on it")
        elif facts.queue_blind:
            spots.append(
                f"a task blocked in msgrcv/msgsnd on it could be invisible ({facts.queue_blind})"
            )
    if unit_state is UnitState.UNKNOWN:
        why = facts.blind or "its processes were not looked at"
        cgroup = facts.unit_notes.get(unit or "")
        spots.append(
            f"cannot tell whether {unit} is running ({why}{'; ' + cgroup if cgroup else ''})"
        )
    return spots


def decide_one(
    obj: IpcObject, owner: Owner | None, facts: HostFacts, grace: float, now: float
) -> Decision:
    def verdict(v: Verdict, reason: str) -> Decision:
        return Decision(obj, owner.name if owner else None, v, reason)

    if owner is None:  # 1. ownership (the caller explains why)
        return Decision(obj, None, Verdict.UNOWNED, "")
    # a unit nobody looked at is as good as one we cannot see: not proof of anything
    unit_state = facts.units.get(owner.unit, UnitState.UNKNOWN) if owner.unit else None
    if unit_state is UnitState.RUNNING:  # 2. the owner is alive
        return verdict(
            Verdict.IN_USE,
            f"{_unit_label(owner.unit, facts.unit_names)} is running"
            f"{_unit_note(owner.unit, facts.unit_notes)}: it may attach by key again at any "
            "moment",
        )
    last = obj.last_activity
    views, doubts = _pid_views(obj, facts, last)
    life = _life(obj, facts, views)  # 3. the object shows life
    if life:
        return verdict(Verdict.IN_USE, "; ".join(life))
    idle = now - last
    if idle < grace:  # 4. idle time
        return verdict(
            Verdict.YOUNG,
            f"last active {format_duration(max(idle, 0))} ago, min_age {format_duration(grace)}",
        )
    if obj.kind is IpcKind.MSG and obj.qnum and owner.keep_queued_messages:  # 5. data
        return verdict(
            Verdict.HOLDS_DATA,
            f"{obj.qnum} message(s), {obj.qbytes} bytes still queued (keep_queued_messages)",
        )
    # 6. proof of death
    if obj.unreadable:
        return verdict(Verdict.UNKNOWN, obj.unreadable)
    unknown = [v.describe() for v in views if v.fate == "unknown"] + doubts
    unknown += _blind_spots(obj, facts, owner.unit, unit_state)
    if unknown:
        return verdict(Verdict.UNKNOWN, "; ".join(unknown))
    return verdict(*_proof(views, owner.unit, unit_state, _tail(obj, idle, last)))


def _proof(
    views: list[_PidView], unit: str | None, unit_state: UnitState | None, tail: list[str]
) -> tuple[Verdict, str]:
    """Rule 6 with no doubt left: stale on the dead pids, or on the owner's stopped unit."""
    if views:
        return Verdict.STALE, "; ".join([v.describe() for v in views] + tail)
    if unit_state is UnitState.STOPPED:
        return Verdict.STALE, "; ".join([f"records no pid; {unit} is not running", *tail])
    return (
        Verdict.UNKNOWN,
        "records no pid, and its owner has no unit whose stop would prove it unused",
    )


def _life(obj: IpcObject, facts: HostFacts, views: list[_PidView]) -> list[str]:
    """Rule 3: every sign that the object is in use (attached, waited on, a live pid)."""
    life = []
    if obj.nattch:
        life.append(f"{obj.nattch} attached")
    if obj.ncnt or obj.zcnt:
        life.append(f"{obj.ncnt + obj.zcnt} waiting in semop")
    waiting = _queue_waiters(obj, facts)
    if waiting:
        life.append("; ".join(waiting))
    life += [v.describe() for v in views if v.fate == "alive"]
    return life


def _queue_waiters(obj: IpcObject, facts: HostFacts) -> tuple[str, ...]:
    """The tasks blocked in msgrcv/msgsnd on this queue (the kernel keeps no count of them)."""
    if obj.kind is not IpcKind.MSG or not facts.queue_waiters:
        return ()
    return facts.queue_waiters.get(obj.id, ())


def _tail(obj: IpcObject, idle: float, last: int) -> list[str]:
    tail = ["nothing attached"] if obj.kind is IpcKind.SHM else []
    tail.append(f"idle {format_duration(idle)}" if last else "never used")
    return tail


Claim = tuple[IpcObject, Owner | None]
_new = tuple.__new__


def claims(objects: Iterable[IpcObject], policy: Policy) -> list[Claim]:
    """Each object with the owner that claims it (step 1, done once per run)."""
    return [(obj, policy.owner_of(obj)) for obj in objects]


def decide(
    claimed: Iterable[Claim], facts: HostFacts, policy: Policy, now: float
) -> list[Decision]:
    """A verdict for every object, in the order given.

    decide_one is pure, and within one call facts, policy and now are fixed, so objects that
    agree on everything decide_one reads get the same verdict and reason: it is asked once
    for each such group (a dead worker's many objects share their pids and often their times).
    Groups are keyed by the owner itself, not its name: what decide_one reads of an owner is
    its unit, grace and settings, and names are not where that safety should rest.
    """
    out = []
    seen: dict[tuple[object, ...], tuple[Verdict, str]] = {}
    waiters = facts.queue_waiters or {}
    msg = IpcKind.MSG
    for obj, owner in claimed:
        if owner is None:
            out.append(Decision(obj, None, Verdict.UNOWNED, _unowned_reason(obj, policy)))
            continue
        same = (id(owner), obj.kind, obj.nattch, obj.ncnt, obj.zcnt, obj.qnum, obj.qbytes,
                obj.pids, obj.values, obj.times, obj.unreadable,
                waiters.get(obj.id) if obj.kind is msg else None)  # fmt: skip
        known = seen.get(same)
        if known is None:
            d = decide_one(obj, owner, facts, policy.grace(owner), now)
            seen[same] = (d.verdict, d.reason)
            out.append(d)
        else:  # a Decision from its fields in order, at C speed (64k per run)
            out.append(_new(Decision, (obj, owner.name, *known)))
    return out


def pids_to_probe(claimed: Iterable[Claim]) -> dict[int, int]:
    """The pids worth a look (those recorded by owned objects), each with the oldest last
    activity among the objects that record it."""
    oldest: dict[int, int] = {}
    for obj, owner in claimed:
        if owner is None:
            continue
        last = obj.last_activity
        for rec in obj.pids:
            if rec.pid > 0 and oldest.get(rec.pid, last + 1) > last:
                oldest[rec.pid] = last
    return oldest


def _unit_label(unit: str | None, names: Mapping[str, str]) -> str:
    """The policy's unit name, and the name systemd runs it as when that is an alias."""
    primary = names.get(unit or "")
    return f"{unit} (an alias of {primary})" if primary else str(unit)


def _unit_note(unit: str | None, notes: Mapping[str, str]) -> str:
    """How the unit was seen running, where the reason should say so (a cgroup's 0 pids)."""
    note = notes.get(unit or "")
    return f" ({note})" if note else ""


def units_to_probe(claimed: Iterable[Claim]) -> set[str]:
    return {owner.unit for _, owner in claimed if owner is not None and owner.unit}


def queues_to_probe(claimed: Iterable[Claim]) -> bool:
    """Whether any owned object is a message queue, whose waiters only the tasks show."""
    return any(owner is not None and obj.kind is IpcKind.MSG for obj, owner in claimed)


def _posix_unowned(obj: PosixObject, owners: tuple[Owner, ...], policy: Policy) -> str:
    """Why no single owner claims a POSIX object: none does (and near misses), or several."""
    if len(owners) > 1:
        names = " and ".join(o.name for o in owners)
        return (
            f"owners {names} both claim {obj.name!r} (their names overlap): kept until one "
            "owner alone claims it (policy check shows the overlap)"
        )
    near = [
        o
        for o in policy.owners
        if obj.kind in o.posix_kinds and o.uid is not None and o.uid != obj.uid
        and to_regex(o.names).match(obj.name)
    ]  # fmt: skip
    if near:
        o = near[0]
        return (
            f"owner {o.name}'s names match, but the file's uid is {user(policy, obj.uid)}, "
            f"not {user(policy, o.uid or 0)}"
        )
    return f"no owner's names claim {obj.kind.value} {obj.name!r}"


def decide_posix(
    obj: PosixObject,
    owners: tuple[Owner, ...],
    facts: PosixFacts,
    policy: Policy,
    now: float,
) -> PosixDecision:
    """PURE: one POSIX object's verdict, by the contract's rules in their order."""
    if len(owners) != 1:  # 1. ownership: none, or two that overlap
        return PosixDecision(obj, None, Verdict.UNOWNED, _posix_unowned(obj, owners, policy))
    (owner,) = owners
    held = facts.holders.get(obj.identity, ())

    def verdict(v: Verdict, reason: str) -> PosixDecision:
        return PosixDecision(obj, owner.name, v, reason, held)

    unit_state = facts.units.get(owner.unit, UnitState.UNKNOWN) if owner.unit else None
    if unit_state is UnitState.RUNNING:  # 2. the owner is alive
        return verdict(
            Verdict.IN_USE,
            f"{_unit_label(owner.unit, facts.unit_names)} is running: it may open {obj.name!r} "
            "again at any moment",
        )
    if held:  # 3. evidence of use
        return verdict(Verdict.IN_USE, "; ".join(held))
    grace = policy.grace(owner)
    last = obj.last_activity
    idle = now - last
    if idle < grace:  # 4. idle time: mtime/ctime, never atime
        return verdict(
            Verdict.YOUNG,
            f"last modified {format_duration(max(idle, 0))} ago, min_age {format_duration(grace)}",
        )
    if obj.kind is PosixKind.MQ and obj.qnum and owner.keep_queued_messages:  # 5. data
        return verdict(
            Verdict.HOLDS_DATA, f"{obj.qnum} message(s) still queued (keep_queued_messages)"
        )
    unknown = _posix_doubts(obj, facts, owner.unit, unit_state)  # 6. proof of death, or
    if unknown:  # what stands in its way
        return verdict(Verdict.UNKNOWN, "; ".join(unknown))
    tail = f"idle {format_duration(idle)}"
    if unit_state is UnitState.STOPPED:
        why = f"nothing maps, opens or locks it; {owner.unit} is not running; {tail}"
    else:
        why = (
            f"nothing maps, opens or locks it; {tail} (past min_age: an owner without unit "
            "proves no more than that)"
        )
    return verdict(Verdict.STALE, why)


def _posix_doubts(
    obj: PosixObject, facts: PosixFacts, unit: str | None, unit_state: UnitState | None
) -> list[str]:
    """Rule 6's doubts about a POSIX object: each stands in the way of a proof of death."""
    unknown = []
    if obj.unreadable:
        unknown.append(obj.unreadable)
    if obj.nlink > 1:
        unknown.append(f"it has {obj.nlink} links: another name of it may be in use")
    if facts.blind:
        unknown.append(f"a holder could be invisible ({facts.blind})")
    if unit_state is UnitState.UNKNOWN:
        unknown.append(
            f"cannot tell whether {unit} is running "
            f"({facts.unit_blind or 'its processes were not looked at'})"
        )
    return unknown


def decide_posix_all(
    objects: Iterable[PosixObject], facts: PosixFacts, policy: Policy, now: float
) -> list[PosixDecision]:
    """A verdict for every POSIX object, in the order given."""
    return [decide_posix(o, policy.name_owners(o), facts, policy, now) for o in objects]


def posix_units_to_probe(objects: Iterable[PosixObject], policy: Policy) -> set[str]:
    """The units of the owners that alone claim some object."""
    out = set()
    for o in objects:
        owners = policy.name_owners(o)
        if len(owners) == 1 and owners[0].unit:
            out.add(owners[0].unit)
    return out

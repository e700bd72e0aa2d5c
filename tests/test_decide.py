"""The verdict function: every rule, in order, and properties that must hold for any input."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.decide import PID_REUSE_MARGIN, claims, decide, decide_one
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
from ipcjanitor.policy import Owner, Policy

NOW = 1_800_000_000.0
T = 1_700_000_000  # the objects' last activity, long ago
OWNER = Owner(name="app", key_ranges=((0x100, 0x1FF),), min_age=600)
UNIT_OWNER = Owner(name="svc", key_ranges=((0x100, 0x1FF),), unit="svc.service", min_age=0)
DEAD = ProcessInfo(Presence.ABSENT)
ALIVE_OLD = ProcessInfo(Presence.PRESENT, start_time=T - 100)


def shm(cpid: int = 10, lpid: int = 10, nattch: int = 0, t: int = T, key: int = 0x100) -> IpcObject:
    return IpcObject(
        IpcKind.SHM,
        1,
        key,
        0,
        0,
        0,
        0,
        0o600,
        size=4096,
        nattch=nattch,
        pids=(PidRecord("creator", cpid), PidRecord("last shmat/shmdt", lpid)),
        times=(("atime", t), ("dtime", t), ("ctime", t - 10)),
    )


def sem(pids: tuple[int, ...] = (), ncnt: int = 0, zcnt: int = 0, t: int = T) -> IpcObject:
    return IpcObject(
        IpcKind.SEM,
        2,
        0x101,
        0,
        0,
        0,
        0,
        0o600,
        nsems=len(pids) or 1,
        ncnt=ncnt,
        zcnt=zcnt,
        pids=tuple(PidRecord(f"last semop on sem {i}", p) for i, p in enumerate(pids)),
        times=(("otime", t), ("ctime", t)),
    )


def msg(qnum: int = 0, pids: tuple[int, int] = (10, 10)) -> IpcObject:
    return IpcObject(
        IpcKind.MSG,
        3,
        0x102,
        0,
        0,
        0,
        0,
        0o600,
        qnum=qnum,
        qbytes=qnum * 10,
        pids=(PidRecord("last sender", pids[0]), PidRecord("last receiver", pids[1])),
        times=(("stime", T), ("rtime", T), ("ctime", T)),
    )


def facts(**procs: ProcessInfo) -> HostFacts:
    return HostFacts(processes={int(k[1:]): v for k, v in procs.items()})


def one(obj: IpcObject, f: HostFacts, owner: Owner = OWNER, now: float = NOW):
    return decide_one(obj, owner, f, owner.min_age or 0, now)


def test_unowned() -> None:
    policy = Policy(owners=(OWNER,))
    (d,) = decide(claims([shm(key=0x300)], policy), facts(), policy, NOW)
    assert d.verdict is Verdict.UNOWNED and d.reason == "no owner claims this key"


def test_uid_mismatch_is_explained() -> None:
    policy = Policy(owners=(Owner(name="app", key_ranges=((0x100, 0x1FF),), uid=33),))
    (d,) = decide(claims([shm()], policy), facts(), policy, NOW)
    assert d.verdict is Verdict.UNOWNED and "not app's uid 33/cuid 33" in d.reason


def test_running_unit_keeps_even_a_dead_object() -> None:
    f = HostFacts(processes={10: DEAD}, units={"svc.service": UnitState.RUNNING})
    d = one(shm(), f, UNIT_OWNER)
    assert d.verdict is Verdict.IN_USE and "svc.service is running" in d.reason


def test_signs_of_life() -> None:
    assert one(shm(nattch=2), facts(p10=DEAD)).verdict is Verdict.IN_USE
    assert one(sem((10,), ncnt=1), facts(p10=DEAD)).verdict is Verdict.IN_USE
    assert one(sem((10,), zcnt=1), facts(p10=DEAD)).verdict is Verdict.IN_USE
    d = one(shm(cpid=10, lpid=11), facts(p10=DEAD, p11=ALIVE_OLD))
    assert d.verdict is Verdict.IN_USE and d.reason == "last shmat/shmdt pid 11 is alive"


def test_young_counts_idle_time_not_age() -> None:
    d = one(shm(t=int(NOW) - 60), facts(p10=DEAD))
    assert d.verdict is Verdict.YOUNG and d.reason == "last active 60s ago, min_age 10m"
    # a timestamp in the future (clock stepped back) is young, never stale
    assert one(shm(t=int(NOW) + 500), facts(p10=DEAD)).verdict is Verdict.YOUNG


def test_queued_messages() -> None:
    assert one(msg(qnum=3), facts(p10=DEAD)).verdict is Verdict.HOLDS_DATA
    keep_not = Owner(name="q", key_ranges=((1, 0x1FF),), keep_queued_messages=False, min_age=0)
    assert one(msg(qnum=3), facts(p10=DEAD), keep_not).verdict is Verdict.STALE


def test_stale_reason_reads_at_a_glance() -> None:
    d = one(shm(cpid=4127, lpid=4127), facts(p4127=DEAD))
    assert d.verdict is Verdict.STALE
    assert d.reason.startswith("creator/last shmat/shmdt pid 4127 exited; nothing attached; idle ")


def test_pid_reuse() -> None:
    younger = ProcessInfo(Presence.PRESENT, start_time=T + PID_REUSE_MARGIN + 1)
    d = one(shm(), facts(p10=younger))
    assert d.verdict is Verdict.STALE and "now belongs to a process started" in d.reason
    # within the margin it could be the same process: kept
    close = ProcessInfo(Presence.PRESENT, start_time=T + PID_REUSE_MARGIN)
    assert one(shm(), facts(p10=close)).verdict is Verdict.IN_USE


def test_zombie_is_dead_and_hidden_is_unknown() -> None:
    assert one(shm(), facts(p10=ProcessInfo(Presence.ZOMBIE, T - 5))).verdict is Verdict.STALE
    d = one(shm(), facts(p10=ProcessInfo(Presence.HIDDEN, detail="EACCES")))
    assert d.verdict is Verdict.UNKNOWN and "EACCES" in d.reason


def test_zero_pids() -> None:
    # shm always records its creator: 0 means hidden
    assert one(shm(cpid=0, lpid=0), facts()).verdict is Verdict.UNKNOWN
    # 0 is "never" where we see everything...
    assert one(shm(lpid=0), facts(p10=DEAD)).verdict is Verdict.STALE
    # ...and possibly hidden where we do not
    blind = HostFacts(processes={10: DEAD}, hidden_pids="nested pid namespace")
    d = one(shm(lpid=0), blind)
    assert d.verdict is Verdict.UNKNOWN and "nested pid namespace" in d.reason


def test_no_pid_at_all_needs_a_stopped_unit() -> None:
    assert one(sem((0, 0)), facts()).verdict is Verdict.UNKNOWN
    stopped = HostFacts(units={"svc.service": UnitState.STOPPED})
    d = one(sem((0, 0)), stopped, UNIT_OWNER)
    assert d.verdict is Verdict.STALE and "svc.service is not running" in d.reason
    unknown = HostFacts(units={"svc.service": UnitState.UNKNOWN}, hidden_pids="hidepid=2")
    assert one(sem((0, 0)), unknown, UNIT_OWNER).verdict is Verdict.UNKNOWN
    # a unit nobody looked at proves nothing either, even with every pid dead
    d = one(shm(), facts(p10=DEAD), UNIT_OWNER)
    assert d.verdict is Verdict.UNKNOWN and "not looked at" in d.reason


def test_unreadable_details_are_unknown() -> None:
    obj = IpcObject(
        IpcKind.SEM,
        2,
        0x101,
        0,
        0,
        0,
        0,
        0o600,
        times=(("ctime", T),),
        unreadable="semctl on set 2: Permission denied",
    )
    assert one(obj, facts()).verdict is Verdict.UNKNOWN


# ---- properties -------------------------------------------------------------------------

presences = st.sampled_from(list(Presence))
pids = st.integers(min_value=0, max_value=6)
proc_infos = st.builds(
    ProcessInfo, presences, st.one_of(st.none(), st.floats(T - 1000, T + 1000)), st.just("x")
)


@st.composite
def objects(draw: st.DrawFn) -> IpcObject:
    kind = draw(st.sampled_from(list(IpcKind)))
    t = draw(st.integers(T - 100, int(NOW) + 100))
    if kind is IpcKind.SHM:
        return shm(draw(pids), draw(pids), draw(st.integers(0, 2)), t)
    if kind is IpcKind.SEM:
        return sem(
            tuple(draw(st.lists(pids, max_size=4))),
            draw(st.integers(0, 1)),
            draw(st.integers(0, 1)),
            t,
        )
    return msg(draw(st.integers(0, 2)), (draw(pids), draw(pids)))


host_facts = st.builds(
    HostFacts,
    st.dictionaries(st.integers(1, 6), proc_infos),
    st.dictionaries(st.just("svc.service"), st.sampled_from(list(UnitState))),
    st.one_of(st.none(), st.just("blind")),
)
owners = st.sampled_from([OWNER, UNIT_OWNER])


def alive(info: ProcessInfo | None, obj: IpcObject) -> bool:
    return (
        info is not None
        and info.presence is Presence.PRESENT
        and info.start_time is not None
        and info.start_time - obj.last_activity <= PID_REUSE_MARGIN
    )


@given(objects(), host_facts, owners)
def test_stale_only_with_proof_of_death(obj: IpcObject, f: HostFacts, owner: Owner) -> None:
    d = one(obj, f, owner)
    if d.verdict is not Verdict.STALE:
        return
    assert not obj.nattch and not obj.ncnt and not obj.zcnt
    if owner.unit:  # a unit-bound owner's object is stale only once the unit is seen stopped
        assert f.units.get(owner.unit) is UnitState.STOPPED
    for rec in obj.pids:
        if rec.pid:
            info = f.processes.get(rec.pid)
            assert info is not None and info.presence is not Presence.HIDDEN
            assert not alive(info, obj)
        else:
            assert f.hidden_pids is None and rec.role != "creator"
    if not any(rec.pid for rec in obj.pids):
        assert f.units.get(owner.unit or "") is UnitState.STOPPED
    assert NOW - obj.last_activity >= (owner.min_age or 0)
    assert not (obj.kind is IpcKind.MSG and obj.qnum and owner.keep_queued_messages)


@given(objects(), host_facts, owners)
def test_every_object_gets_one_verdict_and_a_reason(
    obj: IpcObject, f: HostFacts, owner: Owner
) -> None:
    d = one(obj, f, owner)
    assert d.verdict in {
        Verdict.IN_USE,
        Verdict.YOUNG,
        Verdict.HOLDS_DATA,
        Verdict.UNKNOWN,
        Verdict.STALE,
    }
    assert d.reason and d.owner == owner.name


@given(st.lists(objects(), max_size=8), host_facts, st.randoms())
def test_verdicts_do_not_depend_on_order(
    objs: list[IpcObject], f: HostFacts, rnd: random.Random
) -> None:
    policy = Policy(owners=(OWNER,))
    first = decide(claims(objs, policy), f, policy, NOW)
    shuffled = list(zip(objs, first, strict=True))
    rnd.shuffle(shuffled)
    again = decide(claims([o for o, _ in shuffled], policy), f, policy, NOW)
    assert again == [d for _, d in shuffled]


@given(st.lists(objects(), max_size=12), host_facts, owners)
def test_grouping_in_decide_changes_no_verdict(
    objs: list[IpcObject], f: HostFacts, owner: Owner
) -> None:
    policy = Policy(owners=(owner,))
    # duplicates with other ids and keys must still get exactly decide_one's answer
    objs = objs + [o._replace(id=o.id + 100) for o in objs]
    got = decide(claims(objs, policy), f, policy, NOW)
    assert got == [decide_one(o, owner, f, policy.grace(owner), NOW) for o in objs]


def test_a_forward_clock_step_widens_the_reuse_margin() -> None:
    # the creator really started before its object; a 10 s forward step since makes its
    # start look 8 s later than the object's time: with the step known, it is still alive
    looks_younger = ProcessInfo(Presence.PRESENT, start_time=T + 8)
    assert one(shm(), facts(p10=looks_younger)).verdict is Verdict.STALE
    stepped = HostFacts(processes={10: looks_younger}, reuse_margin=PID_REUSE_MARGIN + 10)
    assert one(shm(), stepped).verdict is Verdict.IN_USE

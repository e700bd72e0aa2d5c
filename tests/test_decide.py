"""The verdict function: every rule, in order, and properties that must hold for any input."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcjanitor.engine.decide import PID_REUSE_MARGIN, claims, decide, decide_one
from ipcjanitor.kernel.sysvipc import msg_object, sem_object, shm_object
from ipcjanitor.model import (
    HostFacts,
    IpcKind,
    IpcObject,
    Presence,
    ProcessInfo,
    UnitState,
    Verdict,
)
from ipcjanitor.policy.model import Owner, Policy

NOW = 1_800_000_000.0
T = 1_700_000_000  # the objects' last activity, long ago
OWNER = Owner(name="app", key_ranges=((0x100, 0x1FF),), min_age=600)
UNIT_OWNER = Owner(name="svc", key_ranges=((0x100, 0x1FF),), unit="svc.service", min_age=0)
DEAD = ProcessInfo(Presence.ABSENT)
ALIVE_OLD = ProcessInfo(Presence.PRESENT, start_time=T - 100)


def shm(  # noqa: PLR0917
    cpid: int = 10,
    lpid: int = 10,
    nattch: int = 0,
    t: int = T,
    key: int = 0x100,
    attached: bool | None = None,
) -> IpcObject:
    """Built as the kernel's record would be: atime/dtime set once something attached."""
    used = t if (lpid if attached is None else attached) else 0
    return shm_object(1, (key, 0, 0, 0, 0, 0o600, 4096, used, used, t - 10, cpid, lpid, nattch))


def sem(
    pids: tuple[int, ...] = (),
    ncnt: int = 0,
    zcnt: int = 0,
    t: int = T,
    values: tuple[int, ...] | None = None,
) -> IpcObject:
    """A set whose semaphores with a pid hold 1 unless `values` says otherwise."""
    pids = pids or (0,)
    vals = tuple(int(p != 0) for p in pids) if values is None else values
    n = len(pids)
    zeros = (0,) * (n - 1)
    otime = t if any(pids) else 0
    return sem_object(
        2, (0x101, 0, 0, 0, 0, 0o600, n, otime, t, pids, (ncnt, *zeros), (zcnt, *zeros), vals)
    )


def msg(
    qnum: int = 0, pids: tuple[int, int] = (10, 10), msqid: int = 3, received: bool | None = None
) -> IpcObject:
    """A queue whose stime/rtime are set exactly when its sender/receiver pid is."""
    stime = T if pids[0] else 0
    rtime = T if (pids[1] if received is None else received) else 0
    return msg_object(msqid, (0x102, 0, 0, 0, 0, 0o600, qnum * 10, qnum, stime, rtime, T, *pids))


EVERY_STEP_RECORDED = float("-inf")  # the clock record covers every process's start


def facts(**procs: ProcessInfo) -> HostFacts:
    """Facts of a host where every process is visible, no task waits on a queue, and every
    step of the wall clock since any process started is recorded."""
    return HostFacts(
        processes={int(k[1:]): v for k, v in procs.items()},
        queue_waiters={},
        clock_covered_from=EVERY_STEP_RECORDED,
    )


def one(obj: IpcObject, f: HostFacts, owner: Owner = OWNER, now: float = NOW):
    return decide_one(obj, owner, f, owner.min_age or 0, now)


def test_unowned() -> None:
    policy = Policy(owners=(OWNER,))
    (d,) = decide(claims([shm(key=0x300)], policy), facts(), policy, NOW)
    assert d.verdict is Verdict.UNOWNED and d.reason == "no owner claims this key"


def test_uid_mismatch_is_explained() -> None:
    policy = Policy(owners=(Owner(name="app", key_ranges=((0x100, 0x1FF),), uid=33),))
    (d,) = decide(claims([shm()], policy), facts(), policy, NOW)
    assert d.verdict is Verdict.UNOWNED and "its owner uid is 0" in d.reason
    assert "where app says uid = 33: write uid = 0 in [owners.app]" in d.reason


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
    assert d.verdict is Verdict.YOUNG and d.reason == "last active 1min ago, min_age 10min"
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


UNRECORDED = "ipcjanitor-clock.timer is not active, so nothing records the clock's steps"


def test_a_younger_process_is_no_proof_of_reuse_where_the_clock_record_may_miss_a_step() -> None:
    """Issue 16.4: a clock stepped back, then forward, before the run makes a live creator
    look younger than its own object by any amount; where the record of the clock's steps
    cannot be shown complete, that is `unknown`, never `stale`."""
    younger = ProcessInfo(Presence.PRESENT, start_time=T + 1800)
    for f in (
        HostFacts(processes={10: younger}, queue_waiters={}, clock_gap=UNRECORDED),
        # complete, but only since after this process started
        facts(p10=younger)._replace(clock_covered_from=T + 1801, clock_gap="since later"),
    ):
        d = one(shm(), f)
        assert d.verdict is Verdict.UNKNOWN, d.reason
        assert "creator/last shmat/shmdt pid 10 " in d.reason
        assert "started 30min after the object's last activity" in d.reason
        assert "wall clock" in d.reason and f.clock_gap in d.reason
    # complete since before it started: reuse
    covered = facts(p10=younger)._replace(clock_covered_from=T + 1800)
    assert one(shm(), covered).verdict is Verdict.STALE
    # a live process that does not look younger needs no record of the clock
    alive = HostFacts(processes={10: ALIVE_OLD}, queue_waiters={})
    assert one(shm(), alive).verdict is Verdict.IN_USE


def test_zombie_is_dead_and_hidden_is_unknown() -> None:
    assert one(shm(), facts(p10=ProcessInfo(Presence.ZOMBIE, T - 5))).verdict is Verdict.STALE
    d = one(shm(), facts(p10=ProcessInfo(Presence.HIDDEN, detail="EACCES")))
    assert d.verdict is Verdict.UNKNOWN and "EACCES" in d.reason


OUTSIDE = "outside the host's pid namespace"


@pytest.mark.parametrize(
    ("obj", "host_ns", "outside_ns", "why"),
    [
        # shm always records its creator: 0 means hidden, wherever we run
        (shm(cpid=0, lpid=0, attached=False), Verdict.UNKNOWN, Verdict.UNKNOWN, "creator"),
        # never attached (atime/dtime 0): lpid 0 means none, even outside the host's pid ns
        (shm(lpid=0, attached=False), Verdict.STALE, Verdict.STALE, ""),
        # attached once (atime set) but lpid reads 0: a hidden process did it
        (shm(lpid=0, attached=True), Verdict.UNKNOWN, Verdict.UNKNOWN, "segment was attached"),
        # a semaphore whose value is not 0 was set by someone: its pid 0 is hidden
        (sem((0, 10), values=(1, 1)), Verdict.UNKNOWN, Verdict.UNKNOWN, "value is not 0"),
        # value 0 and pid 0 beside an operated semaphore: none on the host, a doubt outside it
        (sem((0, 10), values=(0, 1)), Verdict.STALE, Verdict.UNKNOWN, OUTSIDE),
        # a message was received (rtime set) but lrpid reads 0: hidden
        (msg(pids=(10, 0), received=True), Verdict.UNKNOWN, Verdict.UNKNOWN, "was received"),
        # sent, never received: lrpid 0 is none on the host, a doubt outside it
        (msg(pids=(10, 0)), Verdict.STALE, Verdict.UNKNOWN, OUTSIDE),
    ],
)
def test_zero_pids(obj: IpcObject, host_ns: Verdict, outside_ns: Verdict, why: str) -> None:
    keep_not = OWNER._replace(keep_queued_messages=False)
    on_host = one(obj, facts(p10=DEAD), keep_not)
    assert on_host.verdict is host_ns, on_host.reason
    outside = one(obj, facts(p10=DEAD)._replace(hidden_pids=OUTSIDE), keep_not)
    assert outside.verdict is outside_ns, outside.reason
    assert why in (on_host.reason if host_ns is Verdict.UNKNOWN else outside.reason)


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
# The strategies lean towards death (most pids gone, units stopped, old objects, nothing
# attached) so that most examples reach a `stale` verdict the safety property can check, while
# every sign of life and every kind of blindness still turns up.


def mostly(common: Any, *rare: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from([common] * (2 * len(rare) + 2) + list(rare))


pids = st.integers(0, 12).map(lambda n: n if n <= 6 else n - 6)  # 0 once in 13
proc_infos = st.builds(
    ProcessInfo,
    mostly(Presence.ABSENT, Presence.PRESENT, Presence.ZOMBIE, Presence.HIDDEN),
    st.one_of(st.none(), st.floats(T - 1000, T + 1000)),
    st.just("x"),
)


@st.composite
def objects(draw: st.DrawFn) -> IpcObject:
    kind = draw(st.sampled_from(list(IpcKind)))
    t = draw(mostly(T, int(NOW) - 60, int(NOW) + 100))
    rare = st.integers(0, 5).map(lambda n: n // 5)  # 1 once in six, else 0
    used = draw(mostly(None, True, False))  # None: traces exactly where pids are
    if kind is IpcKind.SHM:
        return shm(draw(pids), draw(pids), draw(rare), t, attached=used)
    if kind is IpcKind.SEM:
        sempids = tuple(draw(st.lists(pids, min_size=1, max_size=4)))
        values = (
            None
            if used is None
            else tuple(
                draw(st.lists(st.integers(0, 2), min_size=len(sempids), max_size=len(sempids)))
            )
        )
        ncnt, zcnt = draw(mostly((0, 0), (1, 0), (0, 1), (1, 1)))
        return sem(sempids, ncnt, zcnt, t, values)  # fmt: skip
    return msg(draw(rare), (draw(pids), draw(pids)), draw(st.integers(3, 4)), used)


host_facts = st.builds(
    HostFacts,
    processes=st.fixed_dictionaries({pid: proc_infos for pid in range(1, 7)}),
    units=st.dictionaries(
        st.just("svc.service"),
        mostly(UnitState.STOPPED, UnitState.RUNNING, UnitState.UNKNOWN),
        min_size=1,
    ),
    hidden_pids=mostly(None, "outside the host's pid namespace"),
    blind=mostly(None, "hidepid"),
    queue_waiters=mostly({}, None, {3: ("pid 5 is blocked in msgrcv on it",)}),
    queue_blind=mostly(None, "cannot read pid 1"),
    pid_notes=st.just({}),
    reuse_margin=st.just(PID_REUSE_MARGIN),
    clock_covered_from=mostly(EVERY_STEP_RECORDED, None, float(T)),
)
owners = st.sampled_from([OWNER._replace(min_age=0), UNIT_OWNER, OWNER])


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
            if info.presence is Presence.PRESENT:  # dead by reuse: only with the clock known
                assert info.start_time is not None and f.clock_covered_from is not None
                assert info.start_time >= f.clock_covered_from
        else:  # a zero is "none" only without a trace, and where it cannot hide a pid
            assert rec.role != "creator" and not rec.traced
            assert f.hidden_pids is None or obj.never_used
    if obj.kind is IpcKind.MSG:  # every task was read, and none waits on this queue
        assert f.queue_waiters is not None and not f.queue_blind
        assert obj.id not in f.queue_waiters
    if not any(rec.pid for rec in obj.pids):
        assert f.units.get(owner.unit or "") is UnitState.STOPPED
    assert NOW - obj.last_activity >= (owner.min_age or 0)
    assert not (obj.kind is IpcKind.MSG and obj.qnum and owner.keep_queued_messages)


def test_the_safety_property_mostly_reaches_its_assertions() -> None:
    """The property above is worth something only if most examples reach `stale`: its
    strategies, drawn as it draws them (derandomized, so this never flakes), mostly do."""
    seen: list[bool] = []

    @settings(derandomize=True, max_examples=200, database=None)
    @given(objects(), host_facts, owners)
    def draw(obj: IpcObject, f: HostFacts, owner: Owner) -> None:
        seen.append(one(obj, f, owner).verdict is Verdict.STALE)

    draw()
    # measured: about 45 % reach it (2-4 in 100 did before the strategies leaned towards death)
    assert len(seen) == 200 and sum(seen) / len(seen) >= 0.35, f"{sum(seen)} of 200 reached stale"


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
    stepped = facts(p10=looks_younger)._replace(reuse_margin=PID_REUSE_MARGIN + 10)
    assert one(shm(), stepped).verdict is Verdict.IN_USE


def test_owners_that_share_a_name_are_never_grouped() -> None:
    """The verdict cache keys on the owner itself: a running unit's objects are never judged
    by another owner's stopped unit, whatever their names."""
    stopped = Owner(name="w@x@y", key_ranges=((0x101, 0x101),), unit="a@x@y.service", min_age=0)
    running = stopped._replace(unit="b@y.service")
    f = facts()._replace(
        units={"a@x@y.service": UnitState.STOPPED, "b@y.service": UnitState.RUNNING}
    )
    policy = Policy(owners=())
    objs = [sem((0,)), sem((0,))._replace(id=9)]
    got = decide([(objs[0], stopped), (objs[1], running)], f, policy, NOW)
    assert [d.verdict for d in got] == [Verdict.STALE, Verdict.IN_USE]

"""engine/decide.py for POSIX objects: each rule in the contract's order (pure)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.engine.decide import PosixFacts, decide_posix, decide_posix_all
from ipcjanitor.model import PosixKind, PosixObject, UnitState, Verdict
from ipcjanitor.policy.model import Owner, Policy

NOW = 1_000_000.0
OLD = int((NOW - 3600) * 1e9)
PG = Owner("pg", names=("PostgreSQL.*",), posix_kinds=frozenset(PosixKind), unit="pg.service")
PY = Owner("py", names=("psm_*",), posix_kinds=frozenset(PosixKind), uid=33)
POLICY = Policy((PG, PY), min_age=600)


def obj(name: str, kind: PosixKind = PosixKind.SHM, **kw: Any) -> PosixObject:
    base = PosixObject(
        kind, name, 5, 7, 33, 33, 0o100600, 4096, 1, OLD, OLD, OLD, (("", 5, 1),), name
    )
    return base._replace(**kw)


def facts(**kw: Any) -> PosixFacts:
    return PosixFacts(holders={}, units={"pg.service": UnitState.STOPPED})._replace(**kw)


def one(o: PosixObject, f: PosixFacts | None = None) -> tuple[Verdict, str]:
    d = decide_posix_all([o], f or facts(), POLICY, NOW)[0]
    return d.verdict, d.reason


def test_stale_when_unit_stopped_nothing_holds_and_idle() -> None:
    assert one(obj("PostgreSQL.1")) == (
        Verdict.STALE,
        "nothing maps, opens or locks it; pg.service is not running; idle 1h",
    )


def test_unitless_owner_is_stale_on_min_age_alone_and_says_so() -> None:
    v, why = one(obj("psm_1"))
    assert v is Verdict.STALE and "an owner without unit proves no more than that" in why


def test_unowned_and_near_miss_and_overlap() -> None:
    assert one(obj("other")) == (Verdict.UNOWNED, "no owner's names claim posix-shm 'other'")
    v, why = one(obj("psm_1", uid=34))
    assert (
        v is Verdict.UNOWNED and "owner py's names match, but the file's uid is 34, not 33" in why
    )
    both = Policy((PY, Owner("all33", names=("*",), posix_kinds=frozenset(PosixKind), uid=33)))
    d = decide_posix_all([obj("psm_1")], facts(), both, NOW)[0]
    assert d.verdict is Verdict.UNOWNED and d.owner is None
    assert "owners py and all33 both claim 'psm_1'" in d.reason


def test_a_running_unit_keeps_it() -> None:
    v, why = one(obj("PostgreSQL.1"), facts(units={"pg.service": UnitState.RUNNING}))
    assert v is Verdict.IN_USE and "pg.service is running" in why


def test_holders_keep_it_and_are_named() -> None:
    f = facts(holders={(5, 7): ("mapped by pid 812 (php-fpm)", "LOCK_SH by pid 4410")})
    d = decide_posix(obj("psm_1"), (PY,), f, POLICY, NOW)
    assert d.verdict is Verdict.IN_USE
    assert d.reason == "mapped by pid 812 (php-fpm); LOCK_SH by pid 4410"
    assert d.holders == ("mapped by pid 812 (php-fpm)", "LOCK_SH by pid 4410")


def test_young_by_mtime_or_ctime_never_atime() -> None:
    recent = int((NOW - 30) * 1e9)
    assert one(obj("psm_1", mtime_ns=recent))[0] is Verdict.YOUNG
    assert one(obj("psm_1", ctime_ns=recent))[0] is Verdict.YOUNG
    assert one(obj("psm_1", atime_ns=recent))[0] is Verdict.STALE


def test_a_queue_with_messages_holds_data() -> None:
    q = obj("psm_q", PosixKind.MQ, qnum=3)
    assert one(q) == (Verdict.HOLDS_DATA, "3 message(s) still queued (keep_queued_messages)")
    free = Policy((PY._replace(keep_queued_messages=False),), min_age=600)
    assert decide_posix_all([q], facts(), free, NOW)[0].verdict is Verdict.STALE


def test_doubts_are_unknown() -> None:
    assert one(obj("psm_1", nlink=2)) == (
        Verdict.UNKNOWN,
        "it has 2 links: another name of it may be in use",
    )
    v, why = one(obj("psm_1"), facts(blind="cannot read the maps or fds of pid 9"))
    assert v is Verdict.UNKNOWN and "a holder could be invisible" in why
    v, why = one(obj("PostgreSQL.1"), facts(units={}, unit_blind="hidepid"))
    assert v is Verdict.UNKNOWN and "cannot tell whether pg.service is running (hidepid)" in why
    v, _ = one(obj("psm_q", PosixKind.MQ, unreadable="its messages cannot be counted"))
    assert v is Verdict.UNKNOWN


@given(
    held=st.booleans(),
    blind=st.booleans(),
    nlink=st.integers(1, 3),
    unit=st.sampled_from(list(UnitState)),
    unreadable=st.booleans(),
    age=st.integers(0, 7200),
)
def test_never_stale_with_any_sign_of_life_or_doubt(
    *, held: bool, blind: bool, nlink: int, unit: UnitState, unreadable: bool, age: int
) -> None:
    t = int((NOW - age) * 1e9)
    o = obj("PostgreSQL.1", nlink=nlink, mtime_ns=t, ctime_ns=t,
            unreadable="x" if unreadable else None)  # fmt: skip
    f = PosixFacts(
        holders={(5, 7): ("fd 3 of pid 1 (x)",)} if held else {},
        blind="hidepid" if blind else None,
        units={"pg.service": unit},
    )
    d = decide_posix(o, (PG,), f, POLICY, NOW)
    doubt = held or blind or nlink > 1 or unit is not UnitState.STOPPED or unreadable
    if doubt or age < 600:
        assert d.verdict is not Verdict.STALE
    else:
        assert d.verdict is Verdict.STALE

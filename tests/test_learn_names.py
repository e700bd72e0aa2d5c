"""learn's POSIX names (issue 19.2): exact names when stable, a pattern over the generated
part, never one that matches another's object or another owner's names; the proposal as
TOML the policy parser reads back, in one owner with the System V segment of the same uid."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.learn.names import MIN_HEAD, Foreign, group_names, propose_names
from ipcjanitor.learn.propose import (
    Claimant,
    PosixSighting,
    Process,
    Sighting,
    Watch,
    propose,
    render,
)
from ipcjanitor.model import IpcKind, IpcObject, PidRecord, PosixKind, PosixObject
from ipcjanitor.policy.model import Owner, Policy
from ipcjanitor.policy.names import common_name, problem, to_regex
from ipcjanitor.policy.parse import parse_policy_text

PG = 110  # the postgres user


def pobj(name: str, kind: PosixKind = PosixKind.SHM, uid: int = PG, ino: int = 0) -> PosixObject:
    ino = ino or (hash((name, kind)) & 0xFFFFFF) + 1
    return PosixObject(kind, name, 23, ino, uid, uid, 0o100600, 4096, 1, 0, 0, 0,
                       (("", 23, 1),), name)  # fmt: skip


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["PostgreSQL.1804289383", "PostgreSQL.2851627493"], {"PostgreSQL.*": 2}),
        (["PostgreSQL.1804289383"], {"PostgreSQL.*": 1}),  # a random handle: generated alone
        (["psm_3f2a1b9c"], {"psm_*": 1}),  # Python's token_hex(4)
        (["vllm_offload_ab12cd34.mmap", "vllm_offload_99ffee01.mmap"], {"vllm_offload_*.mmap": 2}),
        (["jack_sem.0", "jack_sem.1"], {"jack_sem.*": 2}),  # digits that differ
        (["app/buf0", "mysem", "queue_a"], {"app/buf0": 1, "mysem": 1, "queue_a": 1}),  # stable
        (["12345678"], {"12345678": 1}),  # no literal head: too wide for a pattern
        (["a[b]*?"], {"a[[]b][*][?]": 1}),  # glob characters stand for themselves
        (["myapp.4410", "myapp.812"], {"myapp.*": 2}),  # pids
        (["psm_ab12cd34", "psm_x"], {"psm_*": 2}),  # one pattern covers the other name
    ],
)
def test_names_group_into_exact_names_and_patterns(
    names: list[str], expected: dict[str, int]
) -> None:
    assert {p: len(ns) for p, ns in group_names(names).items()} == expected


NAME = st.text(st.sampled_from("abcPSQL._-019f*?[/"), min_size=1, max_size=14).filter(
    lambda n: problem(n, has_uid=True) is None
)


@given(st.lists(NAME, min_size=1, max_size=8))
def test_property_every_name_is_matched_by_its_entry_and_patterns_have_a_head(
    names: list[str],
) -> None:
    groups = group_names(names)
    assert sorted(n for ns in groups.values() for n in ns) == sorted(set(names))
    for pattern, members in groups.items():
        assert problem(pattern, has_uid=True) is None
        rx = to_regex([pattern])
        assert all(rx.match(n) for n in members), (pattern, members)
        plain = pattern.replace("[*]", "X")
        if "*" in plain:
            assert len(plain.split("*")[0]) >= MIN_HEAD
        else:  # an exact entry matches its one name and nothing else given
            assert len(members) == 1 and [n for n in set(names) if rx.match(n)] == list(members)


@given(
    st.lists(NAME, min_size=1, max_size=6),
    st.lists(st.tuples(NAME, st.booleans(), st.sampled_from([PG, 1000])), max_size=6),
    st.lists(NAME, max_size=3),
)
def test_property_no_pattern_matches_anothers_object_or_names(
    ours: list[str], others: list[tuple[str, bool, int]], theirs: list[str]
) -> None:
    mine = set(ours)
    foreign = [
        Foreign(pobj(n, uid=uid), "held by pid 9 (x) in no unit" if held else "")
        for n, held, uid in others
        if n not in mine
    ]
    owners = (
        [Owner("other", names=tuple(theirs), posix_kinds=frozenset(PosixKind))] if theirs else []
    )
    proposed, _ = propose_names([pobj(n) for n in sorted(mine)], foreign, PG, owners)
    assert sorted(n for p in proposed for n in p.names) == sorted(mine)
    for p in proposed:
        if p.exact:
            continue
        rx = to_regex([p.pattern])
        for f in foreign:
            assert not (f.why and f.obj.uid == PG and rx.match(f.obj.name)), (p, f)
        for t in theirs:
            assert common_name(p.pattern, t) is None, (p, t)


def test_a_pattern_held_elsewhere_falls_back_to_exact_names_and_says_why() -> None:
    held = Foreign(pobj("psm_0badc0de"), "held by mapped by pid 90 (other) of other.service")
    proposed, notes = propose_names([pobj("psm_3f2a1b9c")], [held], PG)
    assert [(p.pattern, p.exact) for p in proposed] == [("psm_3f2a1b9c", True)]
    assert "pattern 'psm_*' not proposed: it would match posix-shm 'psm_0badc0de'" in notes[0]


def test_another_users_and_left_over_objects_are_named() -> None:
    proposed, notes = propose_names(
        [pobj("psm_3f2a1b9c")],
        [Foreign(pobj("psm_11111111", uid=1000), ""), Foreign(pobj("psm_22222222"), "")],
        PG,
    )
    assert [(p.pattern, p.also) for p in proposed] == [("psm_*", ("psm_22222222",))]
    assert any("'psm_11111111' of uid 1000 matches 'psm_*' too" in n for n in notes)
    assert any("covers posix-shm 'psm_22222222' too" in n for n in notes)


def test_a_pattern_overlapping_another_owners_is_not_proposed() -> None:
    other = Owner("pg2", names=("PostgreSQL.1*",), posix_kinds=frozenset({PosixKind.SHM}),
                  source="/etc/x.toml:1")  # fmt: skip
    proposed, notes = propose_names([pobj("PostgreSQL.2851627493")], [], PG, [other])
    assert [p.pattern for p in proposed] == ["PostgreSQL.2851627493"]
    assert "owner 'pg2' (/etc/x.toml:1) claims names matching 'PostgreSQL.1*'" in notes[0]


# -- the whole proposal ---------------------------------------------------------------------------


def _segment(key: int, uid: int) -> IpcObject:
    return IpcObject(IpcKind.SHM, 7, key, uid, uid, uid, uid, 0o600,
                     pids=(PidRecord("creator", 812),), times=(("ctime", 1000),),
                     last_activity=1000)  # fmt: skip


def _watch(
    sightings: tuple[Sighting, ...], posix: tuple[PosixSighting, ...], uid: int, **kw: object
) -> Watch:
    procs = {812: Process(812, 900.0, uid, "postgres -D /var/lib/postgresql/15/main")}
    present = kw.pop("present", tuple(s.obj for s in posix))
    return Watch("postgresql@15-main.service", 5.0, 10, procs, sightings,
                 posix=posix, posix_present=present, **kw)  # type: ignore[arg-type]  # fmt: skip


def _users(uid: int) -> str | None:
    return {PG: "postgres", 1000: "alice"}.get(uid)


def test_postgresql_segment_and_dsm_names_in_one_owner(tmp_path: Path) -> None:
    seg = Sighting(_segment(0x001C000B, PG), {("attached", 812): 10, ("creator", 812): 10}, 10)
    dsm = tuple(
        PosixSighting(pobj(n), {("mapped", 812): 10, ("open", 813): 2}, 10)
        for n in ("PostgreSQL.1804289383", "PostgreSQL.2851627493")
    )
    watch = _watch((seg,), dsm, PG)
    proposal = propose(watch, "postgresql", Policy())
    text = render(proposal, watch, _users)
    assert tomllib.loads(text)["owners"] == {
        "postgresql": {
            "unit": "postgresql@15-main.service",
            "kinds": ["shm", "posix-shm"],
            "keys": ["0x001c000b"],
            "names": ["PostgreSQL.*"],
            "uid": "postgres",
            "min_age": "0s",
        }
    }
    assert "posix-shm 'PostgreSQL.1804289383' (uid 110, 4096 bytes), in 10 of 10" in text
    assert "mapped: pid 812 (10)" in text and "open: pid 813 (2)" in text
    owner = parse_policy_text(text.replace('"postgres"', str(PG)), tmp_path / "p.toml")[0][
        "postgresql"
    ]
    policy = Policy((owner,))
    assert policy.name_owners(pobj("PostgreSQL.99")) == (owner,)
    assert policy.name_owners(pobj("PostgreSQL.99", uid=1000)) == ()


def test_python_shared_memory_gets_a_table_of_its_own_with_its_uid() -> None:
    psm = PosixSighting(pobj("psm_3f2a1b9c", uid=1000), {("mapped", 812): 5}, 5)
    watch = _watch((), (psm,), 1000)
    text = render(propose(watch, "shm-service", Policy()), watch, _users)
    assert tomllib.loads(text)["owners"]["shm-service"] == {
        "unit": "postgresql@15-main.service",
        "kinds": ["posix-shm"],
        "names": ["psm_*"],
        "uid": "alice",
        "min_age": "0s",
    }


def test_held_by_another_service_or_claimed_is_not_claimed_and_said() -> None:
    other = Owner("billing", names=("bill_*",), posix_kinds=frozenset({PosixKind.SHM}),
                  source="/etc/b.toml:2")  # fmt: skip
    theirs = Claimant("mapped", 90, "otherd", "other.service")
    watch = _watch(
        (),
        (
            PosixSighting(pobj("shared_buf"), {("mapped", 812): 5}, 5, (theirs,)),
            PosixSighting(pobj("bill_1"), {("open", 812): 5}, 5),
            PosixSighting(pobj("psm_3f2a1b9c"), {("mapped", 812): 5}, 5),
        ),
        PG,
    )
    proposal = propose(watch, "pg", Policy((other,)))
    (table,) = proposal.tables
    assert [e.proposed.pattern for e in table.names] == ["psm_*"]
    notes = "\n".join(proposal.left_out)
    assert "posix-shm 'shared_buf': mapped by pid 90 (otherd) of other.service too" in notes
    assert "posix-shm 'bill_1': owner 'billing' (/etc/b.toml:2) already claims it" in notes


def test_an_instance_owner_name_is_a_quoted_toml_key(tmp_path: Path) -> None:
    # owner_name_for("postgresql@15-main.service") is "postgresql@15-main": no bare TOML key
    psm = PosixSighting(pobj("psm_3f2a1b9c"), {("mapped", 812): 5}, 5)
    watch = _watch((), (psm,), PG)
    text = render(propose(watch, "postgresql@15-main", Policy()), watch, _users)
    assert '[owners."postgresql@15-main"]' in text
    assert list(tomllib.loads(text)["owners"]) == ["postgresql@15-main"]
    owners = parse_policy_text(text.replace('"postgres"', str(PG)), tmp_path / "p.toml")[0]
    assert list(owners) == ["postgresql@15-main"]

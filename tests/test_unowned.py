"""Why an object is `unowned`: every near miss says what differs and what to write."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.engine.decide import claims, decide
from ipcjanitor.model import HostFacts, IpcKind, IpcObject, Verdict
from ipcjanitor.policy.load import check_overlaps
from ipcjanitor.policy.model import Owner, Policy

NAMES = {0: "root", 33: "www-data", 1000: "alice"}
SEM, SHM, MSG = IpcKind.SEM, IpcKind.SHM, IpcKind.MSG


def obj(key: int, kind: IpcKind = SEM, uid: int = 33, cuid: int = 0) -> IpcObject:
    return IpcObject(kind, 7, key, uid, uid, cuid, cuid, 0o600)


def reason(owners: tuple[Owner, ...], o: IpcObject) -> str:
    policy = Policy(owners=owners, user_name=NAMES.get)
    (d,) = decide(claims([o], policy), HostFacts(processes={}), policy, 0.0)
    assert d.verdict is Verdict.UNOWNED and d.owner is None
    return d.reason


APACHE = Owner("apache", unit="apache2.service", kinds=frozenset({SEM}), uid=33, private=True)
BILLING = Owner("billing", key_ranges=((0x100, 0x1FF),), uid=1000)
BILLING_SHM = Owner("billing", key_ranges=((0x100, 0x1FF),), kinds=frozenset({SHM, MSG}))
FROM_ROOT = Owner("fpm", key_ranges=((0x100, 0x1FF),), uid=33, cuid=0)


@pytest.mark.parametrize(
    ("owners", "o", "expected"),
    [
        ((BILLING,), obj(0x300), "no owner claims this key"),
        (
            (BILLING,),
            obj(0x150, uid=33, cuid=33),
            "key 0x00000150 is billing's, but its owner uid is 33 (www-data) where billing says "
            "uid = 1000 (alice): write uid = 33 (www-data) in [owners.billing] if it is billing's",
        ),
        (
            (FROM_ROOT,),
            obj(0x150, uid=33, cuid=33),
            "key 0x00000150 is fpm's, but its creator uid is 33 (www-data) where fpm says "
            "cuid = 0 (root): write cuid = 33 (www-data), or no cuid, in [owners.fpm] if it is "
            "fpm's",
        ),
        (
            (FROM_ROOT,),
            obj(0x150, uid=1000, cuid=1000),
            "key 0x00000150 is fpm's, but its owner uid is 1000 (alice) where fpm says "
            "uid = 33 (www-data), and its creator uid is 1000 (alice) where fpm says "
            "cuid = 0 (root): write uid = 1000 (alice) and cuid = 1000 (alice), or no cuid, "
            "in [owners.fpm] if it is fpm's",
        ),
        (
            (BILLING_SHM,),
            obj(0x150, SEM),
            'key 0x00000150 is billing\'s for shm and msg, not sem: add "sem" to kinds in '
            "[owners.billing] if it is billing's",
        ),
        (
            (),
            obj(0),
            "IPC_PRIVATE; no owner claims private objects of uid 33 (www-data)",
        ),
        (
            (APACHE,),
            obj(0, SHM),
            "IPC_PRIVATE of uid 33 (www-data): apache claims that uid's IPC_PRIVATE objects "
            'for sem only, not shm: add "shm" to kinds in [owners.apache] if it is apache\'s',
        ),
        (
            (APACHE._replace(cuid=0),),
            obj(0, SEM, cuid=33),
            "IPC_PRIVATE of uid 33 (www-data): apache claims it, but its creator uid is 33 "
            "(www-data) where apache says cuid = 0 (root): write cuid = 33 (www-data), or no "
            "cuid, in [owners.apache] if it is apache's",
        ),
        (
            (APACHE._replace(private=False, key_ranges=((0x10, 0x10),)),),
            obj(0, SEM),
            "IPC_PRIVATE of uid 33 (www-data): apache has uid = 33 (www-data) but not "
            "private = true: set private = true in [owners.apache] if it is apache's",
        ),
        (
            (APACHE._replace(uid=0),),
            obj(0, SEM, uid=33, cuid=0),
            "IPC_PRIVATE of uid 33 (www-data): apache claims IPC_PRIVATE objects of uid 0 "
            "(root), and root created this one, but uid is the owner (ipcs OWNER), not the "
            "creator: write uid = 33 (www-data) (and cuid = 0 (root) to narrow) in "
            "[owners.apache] if it is apache's",
        ),
        (  # no name for the uid: the number alone
            (BILLING,),
            obj(0x150, uid=4321, cuid=4321),
            "key 0x00000150 is billing's, but its owner uid is 4321 where billing says "
            "uid = 1000 (alice): write uid = 4321 in [owners.billing] if it is billing's",
        ),
    ],
)
def test_each_near_miss_says_what_differs_and_what_to_write(
    owners: tuple[Owner, ...], o: IpcObject, expected: str
) -> None:
    assert reason(owners, o) == expected


def test_apache_sets_are_claimed_by_their_owner_uid_whoever_created_them() -> None:
    """The issue: root creates Apache's IPC_PRIVATE sets and hands them to www-data."""
    policy = Policy(owners=(APACHE,))
    (d,) = decide(claims([obj(0, SEM, uid=33, cuid=0)], policy), HostFacts(), policy, 0.0)
    assert d.owner == "apache"


def test_several_near_misses_are_all_named() -> None:
    shm_only = Owner("cache", key_ranges=((0x150, 0x150),), kinds=frozenset({SHM}))
    msg_only = Owner("jobs", key_ranges=((0x100, 0x1FF),), kinds=frozenset({MSG}))
    text = reason((shm_only, msg_only), obj(0x150, SEM))
    assert text == (
        'key 0x00000150 is cache\'s for shm only, not sem: add "sem" to kinds in '
        "[owners.cache] if it is cache's; key 0x00000150 is jobs's for msg only, not sem: "
        'add "sem" to kinds in [owners.jobs] if it is jobs\'s'
    )


UIDS = st.sampled_from([0, 33, 1000])
owners_st = st.lists(
    st.builds(
        Owner,
        name=st.sampled_from(["a", "b", "c"]),
        key_ranges=st.sampled_from([(), ((0x10, 0x1F),), ((0x18, 0x18),)]),
        kinds=st.frozensets(st.sampled_from(list(IpcKind)), min_size=1),
        uid=st.none() | UIDS,
        cuid=st.none() | UIDS,
        private=st.booleans(),
    ),
    max_size=3,
    unique_by=lambda o: o.name,
)


def _changes(o: Owner, x: IpcObject) -> list[Owner]:
    """The one-field edits a reason must point to when one of them would claim x."""
    edits = [o._replace(kinds=o.kinds | {x.kind}), o._replace(cuid=None), o._replace(private=True)]
    if x.key or o.uid == x.cuid:  # a private owner of any other uid is no near miss
        edits += [o._replace(uid=x.uid), o._replace(uid=x.uid, cuid=None)]
    return edits


@given(owners_st, st.sampled_from([0, 0x10, 0x18, 0x30]), st.sampled_from(list(IpcKind)),
       UIDS, UIDS)  # fmt: skip
def test_every_one_edit_that_would_claim_it_is_named(
    owners: list[Owner], key: int, kind: IpcKind, uid: int, cuid: int
) -> None:
    owners = [o for o in owners if o.uid is not None or (not o.private and o.cuid is None)]
    if check_overlaps(owners):
        return  # the loader refuses it
    x = obj(key, kind, uid, cuid)
    policy = Policy(owners=tuple(owners), user_name=NAMES.get)
    if policy.owner_of(x) is not None:
        return
    text = reason(tuple(owners), x)
    assert text
    for i, o in enumerate(owners):
        for edit in _changes(o, x):
            changed = [*owners[:i], edit, *owners[i + 1 :]]
            if not check_overlaps(changed) and Policy(owners=tuple(changed)).owner_of(x) is edit:
                assert f"[owners.{o.name}]" in text, (o, edit, text)


def test_an_owner_source_with_a_non_ascii_digit_is_no_line_number() -> None:
    """'²'.isdigit() is true and int('²') raises: found by the property test above."""
    from ipcjanitor.policy.load import _overlap_error

    a = Owner(name="a", source="policy.toml:²")
    got = _overlap_error(a, Owner(name="b", source="policy.toml:3"), "segments", "key 0x1")
    assert got.line is None and got.path == "policy.toml"

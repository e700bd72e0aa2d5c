"""learn's pure parts: /proc parsing, key ranges, ftok matching, proposing, TOML that the
real policy parser reads back, and the safe writer. The watcher itself: tests/e2e/test_learn.py."""

from __future__ import annotations

import itertools
import os
import stat
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.cli import main
from ipcjanitor.errors import IpcJanitorError
from ipcjanitor.learn import command as learn
from ipcjanitor.learn.command import (
    blocked_on,
    named_paths,
    owner_name_for,
    parse_maps,
    write_policy,
)
from ipcjanitor.learn.propose import (
    MIN_RUN,
    Candidate,
    Process,
    Sighting,
    Watch,
    comment_text,
    ftok_matches,
    pid_list,
    propose,
    render,
    summarise_keys,
    toml_string,
)
from ipcjanitor.model import IpcKind, IpcObject, PidRecord
from ipcjanitor.policy.model import Owner, Policy
from ipcjanitor.policy.parse import ftok, parse_policy_text

MAPS = """\
55d0c8a00000-55d0c8a2e000 r--p 00000000 fe:01 1447234                    /usr/bin/php8.2
7f2b5c000000-7f2b5c001000 rw-s 00000000 00:01 32769                      /SYSV61002002 (deleted)
7f2b5c001000-7f2b5c002000 rw-s 00000000 00:01 5                          /SYSV00000000 (deleted)
7f2b5c002000-7f2b5c003000 rw-s 00000000 00:01 6                          /SYSV0000abcd
7f2b5c010000-7f2b5c020000 r--p 00000000 fe:01 1449986                    /srv/my app/data file.bin
7f2b5c020000-7f2b5c030000 r--p 00000000 fe:01 1449987                    /tmp/gone (deleted)
7f2b5c030000-7f2b5c040000 rw-p 00000000 00:00 0                          [heap]
7f2b5c040000-7f2b5c050000 rw-p 00000000 00:00 0
7ffd1a3f2000-7ffd1a413000 rw-p 00000000 00:00 0                          [stack]
"""


def test_maps_give_attached_segments_by_shmid_and_key() -> None:
    maps = parse_maps(MAPS)
    assert maps.sysv == ((32769, 0x61002002), (5, 0), (6, 0xABCD))
    assert maps.files == {"/usr/bin/php8.2", "/srv/my app/data file.bin"}


@given(st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**32 - 1)), unique=True))
def test_maps_property_every_sysv_line_is_found(segments: list[tuple[int, int]]) -> None:
    lines = [
        f"7f{i:010x}-7f{i + 1:010x} rw-s 00000000 00:01 {shmid:<20} /SYSV{key:08x} (deleted)"
        for i, (shmid, key) in enumerate(segments)
    ]
    assert parse_maps("\n".join(lines)).sysv == tuple(segments)


SYSCALL_LINES = [
    ("x86_64", "220 0x2 0x7f67f0142df0 0x1 0x0 0x0 0x0 0x7ffe307ad8e8 0x7f67f00305da", ("semtimedop", IpcKind.SEM, 2)),
    ("x86_64", "65 0x1f 0x7ffe 0x1 0x0 0x0 0x0 0x7ffe 0x7f67", ("semop", IpcKind.SEM, 31)),
    ("x86_64", "70 0x8001 0x7ffe 0x2000 0x0 0x0 0x0 0x7ffe 0x7f67", ("msgrcv", IpcKind.MSG, 0x8001)),
    ("x86_64", "69 0x3 0x7ffe 0x10 0x0 0x0 0x0 0x7ffe 0x7f67", ("msgsnd", IpcKind.MSG, 3)),
    ("x86_64", "232 0xb 0x7f67efdf41d0 0x2 0x2710 0x7f67 0x0 0x7ffe 0x7f67", None),  # epoll_wait
    ("x86_64", "running", None),
    ("x86_64", "-1 0x7ffe307ad8e8 0x7f67f00305da", None),  # blocked, not in a syscall
    ("x86_64", "", None),
    ("aarch64", "193 0x4 0xffff 0x1 0x0 0x0 0x0 0xffff 0xffff", ("semop", IpcKind.SEM, 4)),
    ("aarch64", "188 0x5 0xffff 0x1 0x0 0x0 0x0 0xffff 0xffff", ("msgrcv", IpcKind.MSG, 5)),
    ("aarch64", "65 0x1f 0x7ffe 0x1 0x0 0x0 0x0 0x7ffe 0x7f67", None),  # readv there
    ("x86_64", "401 0x7 0xffd0 0x10 0x0 0x0 0x0 0xffd0 0xf7f0", ("msgrcv", IpcKind.MSG, 7)),  # i386
    ("s390x", "220 0x2 0x7f67 0x1 0x0 0x0 0x0 0x7ffe 0x7f67", None),  # unknown: not guessed
]  # fmt: skip


@pytest.mark.parametrize(("machine", "text", "expected"), SYSCALL_LINES)
def test_blocked_tasks_by_syscall_number(
    machine: str, text: str, expected: tuple[str, IpcKind, int] | None
) -> None:
    assert blocked_on(text, machine) == expected


def test_a_32_bit_task_is_never_read_as_a_semaphore_wait() -> None:
    # 220 is getdents64 in the i386 table a 32-bit process on x86_64 reports
    assert (
        blocked_on("220 0x2 0xffd0 0x1 0x0 0x0 0x0 0xffd0 0xf7f0", "x86_64", native=False) is None
    )
    assert blocked_on("70 0x3 0x7ffe 0x10 0x0 0x0 0x0 0x7ffe 0x7f67", "x86_64", native=False) == (
        "msgrcv",
        IpcKind.MSG,
        3,
    )


def test_command_lines_name_paths() -> None:
    args = ["/usr/bin/php", "worker.php", "-c", "--ini=/etc/php/a.ini", "../lib/x", "-v"]
    assert named_paths(args, "/srv/php") == [
        "/srv/php/worker.php",
        "/etc/php/a.ini",
        "/srv/lib/x",
    ]
    assert named_paths(["php", "worker.php"], None) == []


# -- key ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([], []),
        ([0x10], [(0x10, 0x10)]),
        ([0x10, 0x11], [(0x10, 0x10), (0x11, 0x11)]),  # two keys are no run
        ([0x10, 0x11, 0x12], [(0x10, 0x12)]),
        ([0x10, 0x12, 0x14], [(0x10, 0x14)]),  # 3 of 5 seen: dense
        ([0x10, 0x13, 0x16], [(0x10, 0x10), (0x13, 0x13), (0x16, 0x16)]),  # 3 of 7: sparse
        ([1, 2, 3, 4, 100, 200], [(1, 4), (100, 100), (200, 200)]),
        ([0x6104E88B, 0x6104F001, 0x61041234], [(0x61041234, 0x61041234), (0x6104E88B, 0x6104E88B), (0x6104F001, 0x6104F001)]),
    ],
)  # fmt: skip
def test_summarise_keys(keys: list[int], expected: list[tuple[int, int]]) -> None:
    assert summarise_keys(keys) == expected


@given(st.sets(st.integers(1, 2**32 - 1)) | st.sets(st.integers(1000, 1100)))
def test_summarise_property_covers_exactly_and_honestly(keys: set[int]) -> None:
    entries = summarise_keys(keys)
    assert entries == sorted(entries)
    for (_, high), (low, _) in itertools.pairwise(entries):
        assert high < low  # sorted, disjoint
    covered = [k for k in keys if any(lo <= k <= hi for lo, hi in entries)]
    assert len(covered) == len(keys)  # every key seen is claimed
    for low, high in entries:
        inside = [k for k in keys if low <= k <= high]
        assert low in keys and high in keys  # no entry starts or ends on a key never seen
        if low != high:  # a range: at least MIN_RUN seen, and at least half of it seen
            assert len(inside) >= MIN_RUN and 2 * len(inside) >= high - low + 1


# -- ftok --------------------------------------------------------------------------------------


def _candidate(path: Path, rank: int = 0, how: str = "on the command line of pid 1") -> Candidate:
    s = os.stat(path)
    return Candidate(str(path), s.st_dev, s.st_ino, how, rank)


@given(proj=st.integers(1, 255))
def test_ftok_matches_every_proj_of_a_real_file(proj: int) -> None:
    path = Path(__file__)
    (match,) = ftok_matches(ftok(path, proj), [_candidate(path)])
    assert match == (_candidate(path), proj)


@given(dev=st.integers(0, 2**20), ino=st.integers(1, 2**40), proj=st.integers(0, 255))
def test_ftok_property_found_exactly_when_the_bits_agree(dev: int, ino: int, proj: int) -> None:
    c = Candidate("/x", dev, ino, "", 0)
    key = (proj << 24) | ((dev & 0xFF) << 16) | (ino & 0xFFFF)
    assert ftok_matches(key, [c]) == ([(c, proj)] if proj else [])  # proj 0: not an ftok key
    assert ftok_matches(key ^ 0x10000, [c]) == []  # another device
    assert ftok_matches(key ^ 1, [c]) == []  # another inode


def test_ftok_best_candidate_first() -> None:
    a = Candidate("/b/mapped", 1, 2, "mapped by pid 1", 3)
    b = Candidate("/a/named", 1, 2, "on the command line of pid 1", 0)
    c = Candidate("/c/other", 1, 3, "open in pid 1", 2)
    assert [m[0].path for m in ftok_matches(0x61010002, [a, b, c])] == ["/a/named", "/b/mapped"]


# -- proposing ---------------------------------------------------------------------------------


def _obj(kind: IpcKind, ipc_id: int, key: int, uid: int = 0, cuid: int | None = None) -> IpcObject:
    cuid = uid if cuid is None else cuid
    return IpcObject(kind, ipc_id, key, uid, uid, cuid, cuid, 0o600,
                     pids=(PidRecord("creator", 812),), times=(("ctime", 1000),),
                     last_activity=1000)  # fmt: skip


def _seen(obj: IpcObject, what: str = "attached", pid: int = 812, n: int = 10) -> Sighting:
    return Sighting(obj, {(what, pid): n}, n)


def _watch(*sightings: Sighting, candidates: tuple[Candidate, ...] = (), **kw: object) -> Watch:
    procs = {812: Process(812, 900.0, 0, "/usr/bin/php /srv/php/worker.php")}
    return Watch("php-worker.service", 5.0, 10, procs, sightings, candidates, **kw)  # type: ignore[arg-type]


def _names(uid: int) -> str | None:
    return {0: "root", 33: "www-data"}.get(uid)


def _parse(text: str, where: Path) -> dict[str, Owner]:
    parsed = parse_policy_text(text, where)
    owners, min_age, warnings = parsed[0], parsed[1], parsed[2]
    assert min_age is None and warnings == []
    return owners


def test_php_ftok_keys_become_ftok_entries(tmp_path: Path) -> None:
    script = tmp_path / "worker.php"
    script.write_text("<?php\n")
    cand = _candidate(script)
    a, b = ftok(script, ord("a")), ftok(script, ord("b"))
    watch = _watch(
        _seen(_obj(IpcKind.SHM, 1, a)),
        _seen(_obj(IpcKind.SEM, 0, a), "last semop"),
        _seen(_obj(IpcKind.SHM, 2, b), pid=813, n=3),
        candidates=(cand,),
    )
    proposal = propose(watch, "php-worker", Policy())
    text = render(proposal, watch, _names)
    data = tomllib.loads(text)["owners"]["php-worker"]
    assert data == {
        "unit": "php-worker.service",
        "kinds": ["shm", "sem"],
        "ftok": [{"path": str(script), "proj": "a"}, {"path": str(script), "proj": "b"}],
        "uid": "root",
        "min_age": "0s",
    }
    owner = _parse(text, tmp_path / "p.toml")["php-worker"]
    assert sorted(owner.key_ranges) == [(a, a), (b, b)]
    assert "on the command line of pid 1" in text
    assert "attached: pid 812 (10)" in text and "pid 813 (3)" in text
    assert "pid 812: /usr/bin/php /srv/php/worker.php" in text


def test_apache_private_sets_with_root_creator(tmp_path: Path) -> None:
    sets = [_obj(IpcKind.SEM, i, 0, uid=33, cuid=0) for i in (1, 2)]
    watch = _watch(
        _seen(sets[0], "IPC_PRIVATE of uid 33, a user of the unit's processes", 0),
        _seen(sets[1], "blocked in semtimedop", 812),
    )
    text = render(propose(watch, "apache2", Policy()), watch, _names)
    data = tomllib.loads(text)["owners"]["apache2"]
    assert data["private"] is True and data["uid"] == "www-data" and data["cuid"] == "root"
    assert data["kinds"] == ["sem"] and "keys" not in data and "ftok" not in data
    owner = _parse(text, tmp_path / "p.toml")["apache2"]
    assert owner.private and owner.uid == 33 and owner.cuid == 0
    policy = Policy((owner,))
    assert all(policy.owner_of(s) is owner for s in sets)


def test_keys_claimed_elsewhere_are_left_out_and_named(tmp_path: Path) -> None:
    other = Owner("billing", ((0x100, 0x1FF),), frozenset({IpcKind.SHM}), source="/etc/b.toml:3")
    watch = _watch(
        _seen(_obj(IpcKind.SHM, 1, 0x150)),
        _seen(_obj(IpcKind.SHM, 2, 0x300)),
        _seen(_obj(IpcKind.MSG, 3, 0x180)),  # billing claims shm only, but the table holds shm
    )
    proposal = propose(watch, "mine", Policy((other,)))
    (table,) = proposal.tables
    assert [(e.low, e.high) for e in table.keys] == [(0x300, 0x300)]
    assert table.kinds == {IpcKind.SHM}
    assert any("0x00000150" in n and "'billing' (/etc/b.toml:3)" in n for n in proposal.left_out)
    assert any("0x00000180" in n for n in proposal.left_out)
    text = render(proposal, watch, _names)
    assert "# NOT CLAIMED: key 0x00000150" in text
    owners = _parse(text, tmp_path / "p.toml")
    from ipcjanitor.policy.load import check_overlaps

    assert check_overlaps([other, *owners.values()]) == []


def test_a_range_never_crosses_another_owners_key() -> None:
    other = Owner("x", ((0x13, 0x13),), frozenset(IpcKind))
    watch = _watch(*[_seen(_obj(IpcKind.SHM, k, k)) for k in (0x10, 0x11, 0x12, 0x14)])
    (table,) = propose(watch, "mine", Policy((other,))).tables  # cut there, dense runs kept
    assert [(e.low, e.high) for e in table.keys] == [(0x10, 0x12), (0x14, 0x14)]
    (table,) = propose(watch, "mine", Policy()).tables
    assert [(e.low, e.high) for e in table.keys] == [(0x10, 0x14)]


def test_an_owner_of_the_same_name_is_replaced_not_a_conflict() -> None:
    old = Owner("mine", ((0x10, 0x10),), frozenset(IpcKind))
    (table,) = propose(_watch(_seen(_obj(IpcKind.SHM, 1, 0x10))), "mine", Policy((old,))).tables
    assert [(e.low, e.high) for e in table.keys] == [(0x10, 0x10)]


def test_private_of_a_uid_claimed_elsewhere_is_left_out() -> None:
    other = Owner("fpm", (), frozenset({IpcKind.SEM}), uid=33, private=True, source="f:1")
    watch = _watch(_seen(_obj(IpcKind.SEM, 1, 0, uid=33, cuid=0)), _seen(_obj(IpcKind.SHM, 2, 9)))
    proposal = propose(watch, "apache2", Policy((other,)))
    (table,) = proposal.tables
    assert not table.private and [(e.low, e.high) for e in table.keys] == [(9, 9)]
    assert any(
        "'fpm' (f:1) already claims IPC_PRIVATE objects of uid 33" in n for n in proposal.left_out
    )


def test_keyed_and_private_objects_of_other_users_get_two_tables(tmp_path: Path) -> None:
    watch = _watch(
        _seen(_obj(IpcKind.SHM, 1, 0x10, uid=0)),
        _seen(_obj(IpcKind.SEM, 2, 0, uid=33, cuid=0)),
        _seen(_obj(IpcKind.SEM, 3, 0, uid=33, cuid=0)),
        _seen(_obj(IpcKind.SEM, 4, 0, uid=1000)),  # a second private user: not covered
    )
    proposal = propose(watch, "app", Policy())
    assert [t.name for t in proposal.tables] == ["app", "app-private"]
    assert any("sem id 4 (uid 1000, cuid 1000)" in n for n in proposal.left_out)
    owners = _parse(render(proposal, watch, _names), tmp_path / "p.toml")
    assert owners["app"].uid == 0 and not owners["app"].private
    assert owners["app-private"].private and owners["app-private"].uid == 33
    assert owners["app-private"].kinds == {IpcKind.SEM} and owners["app"].kinds == {IpcKind.SHM}


def test_other_private_objects_the_claim_covers_are_named() -> None:
    seen = _obj(IpcKind.SEM, 1, 0, uid=33, cuid=0)
    idle = _obj(IpcKind.SEM, 7, 0, uid=33, cuid=0)
    proposal = propose(_watch(_seen(seen), private_now=(idle,)), "a", Policy())
    assert any("sem id 7 was not seen used" in n for n in proposal.left_out)


def test_prefix_hint_for_scattered_singles() -> None:
    watch = _watch(
        *[
            _seen(_obj(IpcKind.SHM, i, 0x61040000 | k))
            for i, k in enumerate((0x1234, 0x8888, 0xE88B))
        ]
    )
    proposal = propose(watch, "a", Policy())
    assert proposal.hints and '"0x61040000-0x6104ffff"' in proposal.hints[0]


# The property: whatever was seen, the TOML parses with the real parser, claims every object
# it lists, and no text a process controls (its command line) can change what it says.
_hostile = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_kinds = st.sampled_from(list(IpcKind))


@given(
    objects=st.lists(
        st.tuples(_kinds, st.integers(0, 2**32 - 1), st.sampled_from([0, 33, 1000]), st.sampled_from([0, 33])),
        min_size=1,
        max_size=12,
    ),
    command=_hostile,
)  # fmt: skip
def test_rendered_tables_parse_and_claim_what_they_list(
    objects: list[tuple[IpcKind, int, int, int]], command: str
) -> None:
    objs = [_obj(kind, i, key, uid, cuid) for i, (kind, key, uid, cuid) in enumerate(objects)]
    procs = {812: Process(812, 0.0, 0, command)}
    watch = Watch("w.service", 1.0, 3, procs, tuple(_seen(o) for o in objs))
    proposal = propose(watch, "prop", Policy())
    text = render(proposal, watch, _names)
    owners = parse_policy_text(text, Path("/p.toml"))[0]
    assert set(owners) == {t.name for t in proposal.tables}
    policy = Policy(tuple(owners.values()))
    left_out = "\n".join(proposal.left_out)
    for o in objs:
        owner = policy.owner_of(o)
        if owner is None:  # a second IPC_PRIVATE user, or another user's object: said so
            assert o.key == 0 or 0 not in (o.uid, o.cuid)
            assert f"{o.kind.value} id {o.id} " in left_out
        else:
            assert o.kind in owner.kinds
    for owner in owners.values():
        assert owner.unit == "w.service" and owner.min_age == 0


@given(_hostile)
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"x = {toml_string(text)}")["x"] == text


@given(_hostile)
def test_comments_cannot_be_escaped(text: str) -> None:
    assert tomllib.loads(f"# {comment_text(text)}\nx = 1\n") == {"x": 1}


def test_pid_lists_fold_runs() -> None:
    assert pid_list([132, 117, 123, 124, 125, 126]) == "117, 123-126, 132"


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("php-worker.service", "php-worker"),
        ("worker@3.service", "worker@3"),
        ("worker@.service", "worker"),
        ("session-4.scope", "session-4"),
        ("a\\x2db:c.service", "a-x2db-c"),
        (".service", "learned"),
    ],
)
def test_owner_names_from_units(unit: str, name: str) -> None:
    assert owner_name_for(unit) == name
    parse_policy_text(f'[owners."{name}"]\nkeys = [1]\n', Path("/p.toml"))


# -- writing -------------------------------------------------------------------------------------


def test_write_creates_dirs_and_a_0644_file_and_never_overwrites(tmp_path: Path) -> None:
    directory = tmp_path / "etc" / "ipcjanitor" / "policy.d"
    path = write_policy("[owners.a]\nkeys = [1]\n", directory, "a")
    assert path == directory / "a.toml" and path.read_text() == "[owners.a]\nkeys = [1]\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    with pytest.raises(IpcJanitorError, match="exists: learn never overwrites"):
        write_policy("[owners.b]\nkeys = [2]\n", directory, "a")
    assert path.read_text() == "[owners.a]\nkeys = [1]\n"
    assert sorted(os.listdir(directory)) == ["a.toml"]  # no temporary file left


def test_write_follows_no_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(IpcJanitorError, match="is a symlink or not a directory"):
        write_policy("x = 1\n", tmp_path / "link" / "policy.d", "a")
    (real / "a.toml").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IpcJanitorError, match="exists"):
        write_policy("x = 1\n", real, "a")
    assert not (tmp_path / "elsewhere").exists()


def test_write_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(IpcJanitorError, match="writable by group or others"):
        write_policy("x = 1\n", loose, "a")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: fine above the policy directory, not as it
    write_policy("x = 1\n", sticky / "policy.d", "a")
    with pytest.raises(IpcJanitorError, match="writable by group or others"):
        write_policy("x = 1\n", sticky, "a")


# -- the command ---------------------------------------------------------------------------------


def test_usage_errors_exit_64(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text("[owners.a]\nkeys = [1]\n")
    for unit in ("cron.timer", " a.service", "a/b.service", "a\n.service", ".service"):
        assert main(["--policy", str(p), "learn", unit]) == 64
        assert "not a running service or scope name" in capsys.readouterr().err
    assert main(["--policy", str(p), "learn", "a.service", "--for", "soon"]) == 64
    assert main(["--policy", str(p), "learn", "a.service", "--owner", "../x"]) == 64
    assert main(["--policy", str(p), "learn", "a.service", "--write"]) == 64
    assert "pass a directory" in capsys.readouterr().err


def test_unit_names_learn_accepts() -> None:
    for unit in ("php8.2-fpm.service", "worker@.service", "worker@a:b.service", "run-u7.scope"):
        assert learn._UNIT.fullmatch(unit), unit


def test_a_unit_without_processes_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "p.toml"
    p.write_text("[owners.a]\nkeys = [1]\n")
    assert main(["--policy", str(p), "learn", "surely-not-running.service", "--for", "0"]) == 1
    assert "has no processes: learn watches a running unit" in capsys.readouterr().err


def test_write_refuses_an_existing_owner_name_before_watching(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "a.toml").write_text("[owners.web]\nkeys = [1]\n")
    assert main(["--policy", str(tmp_path), "learn", "web.service", "--write"]) == 1
    err = capsys.readouterr().err
    assert f"already has an owner 'web' ({tmp_path}/a.toml:1)" in err


def test_the_watcher_attributes_a_recorded_pid_only_to_a_process_that_predates_the_act() -> None:
    w = learn._Watcher("x.service", Path("/nonexistent"))
    w.processes = {5: Process(5, 1000.0, 0, "x"), 6: Process(6, 1000.0, 0, "x")}
    w.alive = {5}
    w.in_unit = {5: True, 6: False}  # pid 6 left the unit: another process has it now
    acted = _obj(IpcKind.SHM, 1, 1)._replace(times=(("atime", 1000),), last_activity=1000)
    assert w._was_the_units(5, acted)
    assert not w._was_the_units(6, acted)
    assert not w._was_the_units(7, acted)  # never seen in the unit
    old = acted._replace(times=(("atime", 990),), last_activity=990)  # before pid 5 started
    assert not w._was_the_units(5, old)
    w.in_unit = {5: True}
    w.alive = {5}
    assert w._was_the_units(6, acted)  # gone, and nobody has its pid: it was the unit's


def test_the_root_directory_is_no_ftok_candidate() -> None:
    # "/" is every daemon's working directory and inode 2 on ext4: ftok("/", 'q') is
    # 0x71000002 there, a key a service may well choose by hand (found by the e2e test)
    w = learn._Watcher("x.service", Path("/nonexistent"))
    w._candidate("/", "the working directory of pid 1", 4)
    w._candidate(str(Path(__file__).parent), "the working directory of pid 1", 4)
    assert list(w.candidates) == [str(Path(__file__).parent)]


def test_elf_class_tells_32_bit_processes(tmp_path: Path) -> None:
    from ipcjanitor.kernel.tasks import ELFCLASS32, elf_class

    assert elf_class(Path("/proc/self/exe")) == 2  # this Python: 64-bit
    (tmp_path / "i386").write_bytes(b"\x7fELF\x01\x01\x01" + bytes(9))
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert elf_class(tmp_path / "i386") == ELFCLASS32
    assert elf_class(tmp_path / "script") is None
    assert elf_class(tmp_path / "missing") is None


def test_another_services_object_the_unit_only_uses_is_not_claimed(tmp_path: Path) -> None:
    """Found by attacking learn: a unit process attached a running service's world-readable
    segment; learn claimed it, and the unit's hook later removed it under that service."""
    theirs = _obj(IpcKind.SHM, 1, 0x0BADBEEF, uid=999, cuid=999)
    proposal = propose(_watch(_seen(theirs)), "attacker", Policy())
    assert proposal.tables == ()
    assert any(
        "shm id 1 (uid 999, cuid 999): neither uid is a user" in n for n in proposal.left_out
    )
    # one a unit process created is the unit's, whoever it was given to
    made = propose(_watch(_seen(theirs, what="creator")), "attacker", Policy())
    owners = _parse(
        render(made, _watch(_seen(theirs, what="creator")), _names), tmp_path / "p.toml"
    )
    assert owners["attacker"].key_ranges == ((0x0BADBEEF, 0x0BADBEEF),)

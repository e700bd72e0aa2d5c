"""What learn claims (issue 16, item 5): only what the unit made, or used with no other live
claimant seen during the watch; never a key range across an object it saw and does not claim;
and every text a process supplies escaped by escape.py's one rule. Fake facts: the
watcher's side is tests/integration/test_learn_claims.py."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.cli import main
from ipcjanitor.escape import safe_name
from ipcjanitor.learn import command as learn
from ipcjanitor.learn.propose import (
    APPEARED,
    Candidate,
    Claimant,
    Process,
    Sighting,
    Watch,
    comment_text,
    propose,
    render,
    toml_string,
)
from ipcjanitor.model import IpcKind, IpcObject, PidRecord
from ipcjanitor.policy.model import Policy
from ipcjanitor.policy.parse import parse_policy_text

MASTER, WORKER, OTHER = 700, 701, 4242
APACHE = "/usr/sbin/apache2 -k start"
THEIRS = Claimant("attached", OTHER, "otherd", "other.service")
THEY_MADE = Claimant("created", OTHER, "otherd", "other.service")

# what a terminal or an editor acts on: bidi overrides and isolates, C1 controls (CSI, NEL)
HOSTILE_CHARS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\x80\x85\x9b\x9f\x1b"


def _obj(ipc_id: int, key: int, uid: int = 0, kind: IpcKind = IpcKind.SHM) -> IpcObject:
    return IpcObject(kind, ipc_id, key, uid, uid, uid, uid, 0o644,
                     pids=(PidRecord("creator", 9999),), times=(("ctime", 1000),),
                     last_activity=1000)  # fmt: skip


def _seen(
    obj: IpcObject, *how: tuple[str, int], others: tuple[Claimant, ...] = (), n: int = 10
) -> Sighting:
    return Sighting(obj, {h: n for h in how or [("attached", WORKER)]}, n, others)


def _watch(*sightings: Sighting, **kw: object) -> Watch:
    """A unit with a root master (Apache, php-fpm, nginx) and a www-data worker."""
    procs = {
        MASTER: Process(MASTER, 900.0, 0, APACHE),
        WORKER: Process(WORKER, 901.0, 33, APACHE),
    }
    return Watch("apache2.service", 5.0, 10, procs, sightings, **kw)  # type: ignore[arg-type]


def _names(uid: int) -> str | None:
    return {0: "root", 33: "www-data"}.get(uid)


def _keys(watch: Watch) -> list[tuple[int, int]]:
    (table,) = propose(watch, "apache2", Policy()).tables
    return [(e.low, e.high) for e in table.keys]


def test_a_root_units_worker_attaching_another_root_services_segment_does_not_claim_it() -> None:
    """Found by attacking learn: the root master made uid 0 "a user of the unit", so another
    running service's world-readable root segment the worker attached was claimed, written,
    and removed by the unit's hook while that service ran."""
    theirs = _obj(5, 0x62000010)
    watch = _watch(
        _seen(theirs, ("attached", WORKER), ("last shmat/shmdt", WORKER),
              others=(THEIRS, THEY_MADE)),
    )  # fmt: skip
    proposal = propose(watch, "apache2", Policy())
    assert proposal.tables == ()
    (note,) = proposal.left_out
    assert note.startswith("shm id 5 (key 0x62000010): ")
    assert "attached by pid 4242 (otherd) of other.service too" in note
    assert "created by pid 4242 (otherd) of other.service" in note
    text = render(proposal, watch, _names)
    assert "# NOT CLAIMED: shm id 5 (key 0x62000010): " in text


def test_what_the_unit_made_is_claimed_even_when_others_attach_it() -> None:
    ours = _obj(6, 0x62000020)
    watch = _watch(_seen(ours, ("creator", MASTER), ("attached", WORKER), others=(THEIRS,)))
    proposal = propose(watch, "apache2", Policy())
    (table,) = proposal.tables
    assert [(e.low, e.high) for e in table.keys] == [(0x62000020, 0x62000020)]
    assert proposal.left_out == ()
    text = render(proposal, watch, _names)
    assert "#   also attached by pid 4242 (otherd) of other.service" in text


def test_what_the_unit_used_with_no_other_live_claimant_is_claimed() -> None:
    # made by a process that is gone (an ExecStartPre=, say): nobody else was seen with it
    watch = _watch(_seen(_obj(7, 0x62000030)))
    assert _keys(watch) == [(0x62000030, 0x62000030)]


def test_a_claimant_learn_could_not_name_still_counts() -> None:
    unseen = Claimant("attached", 0, "", None)  # nattch says more than the unit's maps show
    watch = _watch(_seen(_obj(8, 0x62000040), others=(unseen,)))
    proposal = propose(watch, "apache2", Policy())
    assert proposal.tables == ()
    assert "attached by processes outside apache2.service too" in proposal.left_out[0]


def test_a_range_is_never_drawn_across_another_services_keys() -> None:
    """Found by attacking learn: 0x62000001-0x62000005 spanned 0x62000002 and 0x62000004,
    two keys of another running service of the same uid."""
    ours = [_seen(_obj(k, k), ("creator", MASTER)) for k in (0x62000001, 0x62000003, 0x62000005)]
    assert _keys(_watch(*ours)) == [(0x62000001, 0x62000005)]  # nothing else seen there
    seen = frozenset({0x62000001, 0x62000002, 0x62000003, 0x62000004, 0x62000005})
    assert _keys(_watch(*ours, present_keys=seen)) == [
        (0x62000001, 0x62000001), (0x62000003, 0x62000003), (0x62000005, 0x62000005),
    ]  # fmt: skip


def test_a_range_is_split_around_an_object_it_saw_used_and_does_not_claim() -> None:
    ours = [_seen(_obj(k, k), ("creator", MASTER)) for k in (0x10, 0x11, 0x12, 0x14, 0x15, 0x16)]
    theirs = _seen(_obj(0x13, 0x13), others=(THEIRS,))
    proposal = propose(_watch(*ours, theirs), "apache2", Policy())
    (table,) = proposal.tables
    assert [(e.low, e.high) for e in table.keys] == [(0x10, 0x12), (0x14, 0x16)]
    assert any("key 0x00000013" in n for n in proposal.left_out)


def test_not_claimed_notes_escape_what_a_process_supplies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    evil = Claimant("attached", OTHER, "\x1b[2A\x1b[J\u202eevil\x85", "o\u2066ther.service")
    watch = _watch(_seen(_obj(9, 0x62000050), others=(evil,)))
    text = render(propose(watch, "a", Policy()), watch, _names)
    escaped = "(\\x1b[2A\\x1b[J\\u202eevil\\u0085) of o\\u2066ther.service too"
    assert not set(text) & set(HOSTILE_CHARS) and escaped in text
    # and on stderr, where learn says what it leaves out
    monkeypatch.setattr(learn, "_watch", lambda unit, seconds, quiet: watch)
    (tmp_path / "p.toml").write_text("[owners.x]\nkeys = [1]\n")
    assert main(["--policy", str(tmp_path / "p.toml"), "learn", "apache2.service"]) == 1
    err = capsys.readouterr().err
    assert not set(err) & set(HOSTILE_CHARS) and escaped in err


def test_proposed_toml_escapes_bidi_and_c1_controls_in_strings_and_comments(
    tmp_path: Path,
) -> None:
    path = f"/srv/ph{HOSTILE_CHARS}p/worker.php"
    cand = Candidate(path, 1, 2, "on the command line of pid 700", 0)
    key = (ord("a") << 24) | (1 << 16) | 2  # ftok(path, 'a') for st_dev 1, st_ino 2
    watch = _watch(_seen(_obj(1, key), ("creator", MASTER)), candidates=(cand,))
    watch = watch._replace(
        processes={MASTER: Process(MASTER, 900.0, 0, f"php {HOSTILE_CHARS[3:6]}\x85 x")}
    )
    text = render(propose(watch, "php", Policy()), watch, _names)
    assert not set(text) & set(HOSTILE_CHARS), [hex(ord(c)) for c in set(text) & set(HOSTILE_CHARS)]
    assert tomllib.loads(text)["owners"]["php"]["ftok"] == [{"path": path, "proj": "a"}]
    parse_policy_text(text, tmp_path / "p.toml")  # the real parser reads it (path missing)
    assert f"php {safe_name(HOSTILE_CHARS[3:6])}\\u0085 x" in text  # the one rule, safe.py's


def test_safe_names_escape_bidi_and_c1_controls() -> None:
    out = safe_name(f"a{HOSTILE_CHARS}b")
    assert out.isprintable() and out.isascii()
    assert "\\u202e" in out and "\\u0085" in out and "\\u009b" in out and "\\x1b" in out


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(_text)
def test_toml_strings_hold_only_what_safe_names_would_print_raw(text: str) -> None:
    out = toml_string(text)
    assert tomllib.loads(f"x = {out}")["x"] == text
    assert all(safe_name(c) == c for c in out if c != "\\")


@given(_text)
def test_comments_are_safe_names(text: str) -> None:
    assert comment_text(text) == safe_name(text)


def test_no_hint_offers_a_block_that_holds_another_services_keys() -> None:
    ours = [_seen(_obj(k, k), ("creator", MASTER)) for k in (0x62001000, 0x62002000, 0x62003000)]
    assert propose(_watch(*ours), "a", Policy()).hints  # the block may be the service's ...
    seen = frozenset({0x62000002, *(s.obj.key for s in ours)})
    proposal = propose(_watch(*ours, present_keys=seen), "a", Policy())
    assert proposal.hints == ()  # ... not when another object learn saw lies in it


# -- the watcher, over a /proc written by the test ------------------------------------------

SHM_HEADER = "key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap"
MSG_HEADER = "key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime"
SEM_HEADER = "key semid perms nsems uid gid cuid cgid otime ctime"


def _process(
    procfs: Path, pid: int, unit: str, comm: str, maps: list[tuple[int, int]] | None
) -> None:
    base = procfs / str(pid)
    base.mkdir()
    (base / "cgroup").write_text(f"0::/system.slice/{unit}\n")
    (base / "stat").write_text(
        f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 0 0\n"
    )
    (base / "status").write_text("Name:\tx\nUid:\t0\t0\t0\t0\n")
    (base / "cmdline").write_bytes(comm.encode() + b"\0")
    (base / "comm").write_text(comm + "\n")
    if maps is not None:  # None: maps learn cannot read
        (base / "maps").write_text("".join(
            f"7f{i:010x}-7f{i + 1:010x} rw-s 00000000 00:01 {shmid} /SYSV{key:08x} (deleted)\n"
            for i, (shmid, key) in enumerate(maps)
        ))  # fmt: skip


def _tables(procfs: Path, shm: list[str], msg: list[str]) -> None:
    (procfs / "sysvipc" / "shm").write_text("\n".join([SHM_HEADER, *shm]) + "\n")
    (procfs / "sysvipc" / "msg").write_text("\n".join([MSG_HEADER, *msg]) + "\n")


def test_the_watcher_records_live_claimants_outside_the_unit(tmp_path: Path) -> None:
    now = int(time.time())
    (tmp_path / "sysvipc").mkdir()
    (tmp_path / "sysvipc" / "sem").write_text(SEM_HEADER + "\n")
    _process(tmp_path, 10, "u.service", "master", [(1, 0x100), (2, 0x200), (3, 0x300), (4, 0x400)])
    _process(tmp_path, 20, "other.service", "otherd", [(1, 0x100)])
    _process(tmp_path, 30, "hidden.service", "hidden", None)

    def shm(shmid: int, key: int, cpid: int, lpid: int, nattch: int) -> str:
        return f"{key} {shmid} 644 4096 {cpid} {lpid} {nattch} 0 0 0 0 {now} 0 {now} 4096 0"

    segments = [
        shm(1, 0x100, 99, 10, 2),  # made by a pid gone; attached by pid 20 too
        shm(2, 0x200, 20, 10, 1),  # made by pid 20, which lives outside the unit
        shm(3, 0x300, 10, 10, 2),  # the unit's own; attached where learn cannot look too
        shm(4, 0x400, 99, 10, 1),  # nobody else
    ]
    _tables(tmp_path, segments, [])
    watcher = learn._Watcher("u.service", tmp_path)
    assert watcher.sample() == 1
    queues = [
        f"{0x500} 5 600 0 0 10 0 0 0 0 0 {now} 0 {now}",  # new, the unit's alone
        f"{0x600} 6 600 0 0 10 20 0 0 0 0 {now} {now} {now}",  # new, pid 20 receives
    ]
    _tables(tmp_path, segments, queues)
    watcher.sample()
    watch, _ = watcher.watch(0, None)  # one more sample
    by_key = {s.obj.key: s for s in watch.sightings}
    otherd = ("otherd", "other.service")
    assert {(c.what, c.pid, c.command, c.unit) for c in by_key[0x100].others} == {
        ("attached", 20, *otherd)
    }
    assert [(c.what, c.pid) for c in by_key[0x200].others] == [("created", 20)]
    assert [(c.what, c.pid) for c in by_key[0x300].others] == [("attached", 0)]  # 2 samples
    assert by_key[0x400].others == ()
    assert (APPEARED, 0) in by_key[0x500].evidence and by_key[0x500].others == ()
    assert (APPEARED, 0) not in by_key[0x600].evidence
    assert [(c.what, c.pid) for c in by_key[0x600].others] == [("last received from", 20)]
    assert watch.present_keys == {0x100, 0x200, 0x300, 0x400, 0x500, 0x600}
    proposal = propose(watch, "u", Policy())
    (table,) = proposal.tables
    assert sorted(s.obj.key for e in table.keys for s in e.sightings) == [0x300, 0x400, 0x500]
    assert len(proposal.left_out) == 3

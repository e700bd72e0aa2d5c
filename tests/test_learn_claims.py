"""What learn claims (issue 16, item 5): only what the unit made, or used with no other live
claimant seen during the watch; never a key range across an object it saw and does not claim;
and every text a process supplies escaped by output/safe.py's one rule. Fake facts: the
watcher's side is tests/integration/test_learn_claims.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.learn.propose import (
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
from ipcjanitor.output.safe import safe_name
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


def test_not_claimed_notes_escape_what_a_process_supplies() -> None:
    evil = Claimant("attached", OTHER, "\x1b[2A\x1b[J\u202eevil\x85", "o\u2066ther.service")
    proposal = propose(_watch(_seen(_obj(9, 0x62000050), others=(evil,))), "a", Policy())
    (note,) = proposal.left_out  # learn prints it to stderr as it is
    assert not set(note) & set(HOSTILE_CHARS)
    assert "\\x1b[2A\\x1b[J\\u202eevil\\x85" in note


def test_proposed_toml_escapes_bidi_and_c1_controls_in_strings_and_comments(
    tmp_path: Path,
) -> None:
    path = f"/srv/ph{HOSTILE_CHARS}p/worker.php"
    cand = Candidate(path, 1, 2, "on the command line of pid 700", 0)
    key = (ord("a") << 24) | (1 << 16) | 2  # ftok(path, 'a') for st_dev 1, st_ino 2
    watch = _watch(_seen(_obj(1, key), ("creator", MASTER)), candidates=(cand,))
    watch = watch._replace(
        processes={MASTER: Process(MASTER, 900.0, 0, f"php {HOSTILE_CHARS} x")}
    )
    text = render(propose(watch, "php", Policy()), watch, _names)
    assert not set(text) & set(HOSTILE_CHARS), [hex(ord(c)) for c in set(text) & set(HOSTILE_CHARS)]
    assert tomllib.loads(text)["owners"]["php"]["ftok"] == [{"path": path, "proj": "a"}]
    parse_policy_text(text, tmp_path / "p.toml")  # the real parser reads it (path missing)
    assert f"php {safe_name(HOSTILE_CHARS)} x" in text  # comments: the one rule, safe.py's


def test_safe_names_escape_bidi_and_c1_controls() -> None:
    out = safe_name(f"a{HOSTILE_CHARS}b")
    assert out.isprintable() and out.isascii()
    assert "\\u202e" in out and "\\x85" in out and "\\x9b" in out and "\\x1b" in out


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(_text)
def test_toml_strings_hold_only_what_safe_names_would_print_raw(text: str) -> None:
    out = toml_string(text)
    assert tomllib.loads(f"x = {out}")["x"] == text
    assert all(safe_name(c) == c for c in out if c != "\\")


@given(_text)
def test_comments_are_safe_names(text: str) -> None:
    assert comment_text(text) == safe_name(text)

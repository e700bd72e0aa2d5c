"""Other programs' own System V test suites beside `clean` in a loop (issue 22.2).

Each peer's suite runs three times at once, each in fresh IPC, pid and mount namespaces: alone
(the baseline), beside `clean` under one owner claiming everything and bound to the unit the suite
runs in (the way the README advises), and beside `clean` under the same owner without a unit
(min_age = "0s": the aggressive policy item 1 warns about). A test that fails beside the
janitor but not alone is one the janitor broke.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.peers import fetch
from tests.peers.conftest import Peer
from tests.peers.inside import prove_broken

# The handoff cases measured so far (README "Peers in CI"): IPC::Shareable's t/00-base.t
# leaves its 'async_tests' segment, kept by name, for t/99-end.t to tie ~20 s later (broken
# every run); on a slow host t/40-ipcref.t's child makes nested segments, their keys kept in
# the parent's, and exits, the janitor removing them before the parent reads them. t/81 needs
# Async::Event::Interval, not in Debian, and skips.


def broke(peer: Peer, run: Any) -> list[str]:
    return sorted(set(run["suite"]["broken"]) - set(peer.baseline["suite"]["broken"]))


def report(peer: Peer, mode: str, run: Any, show: bool = True) -> str:
    s = run["suite"]
    lines = [
        f"{peer.name} {mode}: {s['seconds']} s (alone {peer.baseline['suite']['seconds']} s), "
        f"{run['runs']} clean runs, {len(run['removed'])} removed during the suite, "
        f"broke {broke(peer, run) or 'nothing'}",
        *(f"  removed {r['kind']} {r['key']} at {r['at']} s: {r['reason']}" for r in run["removed"]),
        *(f"  kept {o['kind']} {o['key']} ({o['owner']}): {o['verdict']}: {o['reason']}"
          for o in run.get("kept", [])),
    ]  # fmt: skip
    if show:
        print("\n".join(lines))
    return "\n".join([*lines, str(s.get("tail", "")), str(s.get("stderr", ""))])


def assert_sane(peer: Peer, run: Any) -> None:
    """The loop ran all along and the suite ran; one clean after it leaves nothing dead and
    claimed (what it keeps is printed with its verdict and reason)."""
    text = report(peer, "run", run, show=False)
    assert run["suite"]["ran"] >= 100 and peer.baseline["suite"]["ran"] >= 100, text
    assert run["failed_runs"] == [], text
    assert run["runs"] >= 5, text
    assert run["final_rc"] == 0, text
    dead = [o for o in run["kept"] if o["owner"] is not None and o["verdict"] == "stale"]
    assert dead == [], text


@pytest.mark.integration
@pytest.mark.peers
def test_a_bound_owner_breaks_none_of_the_peers_tests(peer: Peer) -> None:
    run = peer.runs["bound"]
    text = report(peer, "bound", run)
    assert_sane(peer, run)
    assert broke(peer, run) == [], text
    assert run["removed"] == [], text  # the README's table: nothing removed during the suite
    assert "handed off through another segment" not in run["policy_check"]


@pytest.mark.integration
@pytest.mark.peers
def test_a_unitless_owner_at_0s_breaks_only_where_the_handoff_warning_fires(peer: Peer) -> None:
    run = peer.runs["unitless"]
    text = report(peer, "unitless", run)
    assert_sane(peer, run)
    warned = re.findall(r"warning: owner (\S+) .*has no unit and min_age 0: an object handed "
                        r"off through another segment", run["policy_check"])  # fmt: skip
    assert warned == ["all"], run["policy_check"]
    # every removal is the warned owner's, of an object whose creator or last user exited
    # (stale by the contract: the gap the warning names), and nothing broke without one
    assert {r["owner"] for r in run["removed"]} <= set(warned), text
    assert all("exited" in r["reason"] for r in run["removed"]), text
    assert run["removed"] or not broke(peer, run), text
    if peer.name == "sysv_ipc":  # the README's table: nothing removed, nothing broken
        assert (run["removed"], broke(peer, run)) == ([], []), text
    if peer.name == "IPC::Shareable":  # the tier sees what the unit's protection prevents
        assert "t/99-end.t:exit" in broke(peer, run), text


SUMMARY = """\
Test Summary Report
-------------------
t/25-ipc.t               (Wstat: 256 (exited 1) Tests: 12 Failed: 3)
  Failed tests:  2, 5-6
  Non-zero exit status: 1
t/99-end.t               (Wstat: 512 (exited 2) Tests: 1 Failed: 0)
  Non-zero exit status: 2
  Parse errors: No plan found in TAP output
t/30-lock.t              (Wstat: 0 Tests: 4 Failed: 1)
  Failed test:  4
Files=40, Tests=442, 26 wallclock secs
"""


def test_prove_summary_names_every_broken_test() -> None:
    assert prove_broken(SUMMARY) == [
        "t/25-ipc.t#2", "t/25-ipc.t#5", "t/25-ipc.t#6", "t/25-ipc.t:exit",
        "t/30-lock.t#4", "t/99-end.t:exit",
    ]  # fmt: skip
    assert prove_broken("All tests successful.\nResult: PASS\n") == []


def test_the_deb_src_line_names_the_configured_mirror(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("# deb http://old.example/debian bookworm main\n"
                        "deb [arch=amd64] http://other.example/debian bookworm main\n")  # fmt: skip
    assert fetch.debian_mirror((tmp_path / "absent.list", deb822)) == "http://mirror.example/debian"
    assert fetch.debian_mirror((one_line,)) == "http://other.example/debian"
    assert fetch.debian_mirror(()) == "http://deb.debian.org/debian"

"""No other user can take root's run lock and stall every clean and hook (issue 16.6).

A real unprivileged process (setpriv to nobody) tries to hold LOCK_EX on every lock file it
can name or list in /run/ipcjanitor; root's clean must neither wait for it nor let it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

POLICY = """
min_age = "0s"
[owners.test]
keys = ["0x10000000-0x1fffffff"]
"""


def run(scenario: str, tmp: Path) -> Any:
    return in_namespace(scenario, POLICY, tmp, module="lock_scenarios")


def test_nobody_cannot_take_roots_lock(tmp_path: Path) -> None:
    r = run("nobody_takes_the_lock", tmp_path)
    assert r["first"]["finished"] and r["first"]["rc"] == 0, r["first"]
    # before the fix nobody held it (0644 file in a 0755 directory) and the clean waited
    assert r["tried"]["held"] == [], r["tried"]
    assert all("Permission denied" in why for why in r["tried"]["refused"]), r["tried"]
    assert r["run"]["finished"], "root's clean waited for nobody's lock"
    assert r["run"]["rc"] == 0 and r["run"]["clean"]["0x10000601"][0] == "removed", r["run"]
    assert "waited" not in r["run"]["stderr"]
    assert r["dir"] == [0, 0o700] and r["left"] == []


def test_a_lock_held_since_an_older_version_stalls_nothing(tmp_path: Path) -> None:
    r = run("nobody_holds_a_lock_from_before", tmp_path)
    assert r["tried"]["held"] == [r["legacy"]], r["tried"]  # the old file: nobody got it then
    assert r["run"]["finished"], "root's clean waited for the lock nobody held from before"
    assert r["run"]["rc"] == 0 and r["run"]["clean"]["0x10000602"][0] == "removed", r["run"]
    assert r["dir"] == [0, 0o700] and r["left"] == []  # repaired: root's alone again


def test_the_hook_gives_up_on_a_long_run_inside_any_stop_timeout(tmp_path: Path) -> None:
    policy = POLICY.replace("[owners.test]", '[owners.test]\nunit = "svc.service"')
    r = in_namespace("hook_behind_a_long_root_run", policy, tmp_path, module="lock_scenarios")
    # before: it waited 120 s (TimeoutStopSec= defaults to 90 s: the stop failed, Result=timeout)
    assert r["finished"], f"the hook was still waiting after {r['took']:.0f}s"
    assert r["rc"] == 0 and 4.5 < r["took"] < 20, r
    assert "gave up after svc.service stopped, nothing was removed" in r["stderr"], r["stderr"]
    assert "has held /run/ipcjanitor/" in r["stderr"] and r["left"] == ["0x10000603"]
    assert r["doc"]["objects"] == [] and any("gave up" in n for n in r["doc"]["summary"]["notes"])

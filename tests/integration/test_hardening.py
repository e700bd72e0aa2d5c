"""Blindness is detected, faults leave every object removed or intact, runs do not fight."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

POLICY = 'min_age = "0s"\n[owners.test]\nkeys = ["0x10000000-0x1fffffff"]\n'


def test_hidepid_makes_a_hidden_live_creator_unknown(tmp_path: Path) -> None:
    r = in_namespace("hidepid", POLICY, tmp_path)
    verdict, reason = r["scan"]["0x100000a1"]
    assert verdict == "unknown" and "hidden" in reason
    assert r["scan"]["0x100000a2"][0] == "stale"  # kill(pid, 0) still says ESRCH for the dead


def test_subset_pid_still_decides_right(tmp_path: Path) -> None:
    r = in_namespace("subset_pid", POLICY, tmp_path)
    assert r["clean"]["0x100000b1"][0] == "in-use"
    assert r["clean"]["0x100000b2"][0] == "removed"
    assert r["left"] == ["0x100000b1"]


def test_without_proc_nothing_is_removed(tmp_path: Path) -> None:
    r = in_namespace("no_proc", POLICY, tmp_path)
    assert r["rc"] == 77
    assert "cannot see the process table" in r["stderr"] and "removes none" in r["stderr"]
    assert r["left"] == ["0x100000c1"]


def test_sigkill_mid_clean_leaves_objects_removed_or_intact(tmp_path: Path) -> None:
    r = in_namespace("killed_mid_clean", POLICY, tmp_path)
    assert r["first"].startswith("ipcjanitor: removed shm")
    assert 0 < r["left_after_kill"] < 10000, "the kill must land mid-way"
    assert r["intact"], "every object still there must be exactly as it was"
    assert r["rc"] == 0 and r["removed_again"] == r["left_after_kill"] and r["left"] == 0


def test_concurrent_runs_remove_each_object_once(tmp_path: Path) -> None:
    # every process of the scenario's IPC namespace is in its pid namespace: say so, so that
    # svc.service (no process) is known to be stopped
    policy = "pid_namespace_complete = true\n" + POLICY.replace(
        "[owners.test]", '[owners.test]\nunit = "svc.service"'
    )
    r = in_namespace("concurrent_runs", policy, tmp_path)
    assert r["rcs"] == [0, 0, 0]
    assert r["removed"] == r["distinct"] == 3000 and r["failed"] == 0 and r["left"] == 0
    assert len(r["locks"]) == 1  # the hook's lock is the cleans' lock (root's /run/ipcjanitor)


def test_a_proc_of_another_pid_namespace_is_refused(tmp_path: Path) -> None:
    r = in_namespace("foreign_proc", POLICY, tmp_path)
    assert r["rc"] == 77 and "another pid namespace" in r["stderr"]
    assert r["left"] == ["0x100000d1"]

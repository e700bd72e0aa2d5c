"""doctor reproduces both incidents' early warnings in private namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

POLICY = 'min_age = "0s"\n[owners.test]\nkeys = ["0x10000000-0x1fffffff"]\n'


def test_a_table_at_96_percent_is_a_problem_with_its_stale_count(tmp_path: Path) -> None:
    r = in_namespace("table_nearly_full", POLICY, tmp_path)
    assert r["full_rc"] == 1
    shm = next(x for x in r["full"]["limits"] if x["kind"] == "shm" and x["measure"] == "objects")
    assert (shm["used"], shm["max"], shm["percent"], shm["problem"], shm["stale"]) == (
        24,
        25,
        96.0,
        True,
        24,
    )
    assert not r["full"]["healthy"]
    assert r["after_rc"] == 0
    shm = next(x for x in r["after"]["limits"] if x["kind"] == "shm" and x["measure"] == "objects")
    assert (shm["used"], shm["problem"]) == (0, False)


def test_the_supervisord_leak_is_found_and_healthy_pipes_are_not(tmp_path: Path) -> None:
    r = in_namespace("stuck_pipes", POLICY, tmp_path)
    assert r["blocked_writers"] >= 2, "the healthy `yes | sleep` writer must really be blocked"
    assert r["rc"] == 1
    (stuck,) = r["stuck"]
    assert stuck["command"] == "python3" or stuck["command"].startswith("python")
    assert stuck["fds"][0] == 1 and stuck["holds_read_end"] and stuck["read_fds"]
    assert stuck["orphaned"] is True and stuck["inode"] > 0

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


def test_php_s_unreachable_private_queues_are_a_finding_with_their_removal(
    tmp_path: Path,
) -> None:
    """Issue 22, item 3: real PHP 8.2, msg_queue_exists(0) three times: three mode-000
    IPC_PRIVATE queues nobody can ever use; a used private queue is not one of them."""
    r = in_namespace("php_unreachable_queues", POLICY, tmp_path)
    found = r["doc"]["unreachable_queues"]
    assert len(found) == 3, found
    assert r["used"] not in [q["id"] for q in found]
    assert all(q["verdict"] == "unowned" for q in found)
    assert r["rc"] == 1 and not r["doc"]["healthy"]
    for q in found:
        assert f"UNREACHABLE QUEUE: msg id {q['id']} (uid 0)" in r["text"]
        assert f"`ipcrm -q {q['id']}`" in r["text"]


UNITLESS = 'min_age = "0s"\n[owners.suite]\nuid = 65534\nprivate = true\n'


def test_php_s_queues_kept_unknown_by_a_unitless_owner_are_a_finding(tmp_path: Path) -> None:
    """Issue 22, item 3, its own case: msg_get_queue(0) run as the suite's user, whose
    IPC_PRIVATE objects an owner without `unit` claims: clean keeps each queue as `unknown`
    (it records no pid; no stop proves it unused) and doctor lists it with its removal."""
    r = in_namespace("php_unitless_private_queues", UNITLESS, tmp_path)
    kept = [o for o in r["clean"]["doc"]["objects"] if o["uid"] == 65534]
    assert len(kept) == 2 and {o["verdict"] for o in kept} == {"unknown"}, kept
    assert all(o["owner"] == "suite" for o in kept)
    found = r["doc"]["unreachable_queues"]
    assert sorted(q["id"] for q in found) == sorted(o["id"] for o in kept)
    assert all((q["uid"], q["verdict"]) == (65534, "unknown") for q in found)
    assert r["used"] not in [q["id"] for q in found] and r["used"] in r["left"]
    assert r["rc"] == 1 and not r["doc"]["healthy"]
    for q in found:
        assert f"UNREACHABLE QUEUE: msg id {q['id']} (uid 65534)" in r["text"]
        assert f"`ipcrm -q {q['id']}`" in r["text"]
        assert q["id"] in r["left"]

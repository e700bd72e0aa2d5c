"""Live holders the kernel's records do not show: each once let a live object be removed."""

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

[owners.queues]
keys = ["0x30000000-0x3000ffff"]
keep_queued_messages = false
"""


def run(scenario: str, tmp: Path, policy: str = POLICY) -> Any:
    return in_namespace(scenario, policy, tmp, module="safety_scenarios")


@pytest.mark.parametrize("complete", [False, True])
def test_a_task_blocked_on_a_queue_keeps_it(tmp_path: Path, complete: bool) -> None:
    stated = "pid_namespace_complete = true\n" if complete else ""
    r = run("queue_waiters", tmp_path, stated + POLICY)
    receiver, producer, holder, thread = r["pids"]
    verdict, reason = r["clean"]["0x30000101"]
    assert verdict == "in-use" and f"pid {receiver} is blocked in msgrcv on it" in reason
    verdict, reason = r["clean"]["0x30000102"]
    assert verdict == "in-use" and f"pid {producer} is blocked in msgsnd on it" in reason
    verdict, reason = r["clean"]["0x30000103"]
    assert verdict == "in-use"
    assert f"pid {holder} (thread {thread}) is blocked in msgrcv on it" in reason
    # the waiters never saw EIDRM: they are still blocked, and their queues are still there
    assert r["still_blocked"] == {"receiver": True, "producer": True, "thread": True}
    assert {"0x30000101", "0x30000102", "0x30000103"} <= set(r["left"])
    verdict, reason = r["clean"]["0x30000104"]  # every pid dead, and nobody waits on it
    if complete:
        assert verdict == "removed" and "0x30000104" not in r["left"]
    else:  # outside the host's pid namespace a waiter could hide in another one: never stale
        assert verdict == "unknown" and "could be invisible" in reason


def test_pids_hidden_by_a_pid_namespace_are_doubts_unless_the_times_prove_them(
    tmp_path: Path,
) -> None:
    r = run("hidden_holders", tmp_path)
    assert r["rc"] == 0, r["stderr"]
    verdict, reason = r["clean"]["0x10000201"]
    assert verdict == "unknown" and "pid reads 0 although its value is not 0" in reason
    verdict, reason = r["clean"]["0x30000201"]
    assert verdict == "unknown" and "last receiver pid reads 0 although a message" in reason
    verdict, reason = r["clean"]["0x10000202"]
    assert verdict == "unknown" and "reads 0 although the segment was attached" in reason
    # a segment whose times prove nobody attached it: its zero lpid is "none", even here
    assert r["clean"]["0x10000203"][0] == "removed"
    assert r["outsiders_alive"] == [True, True, True]
    assert r["left"] == ["0x10000201", "0x10000202", "0x30000201"]


def test_hidepid_gid_lets_its_group_see_every_process(tmp_path: Path) -> None:
    policy = (
        'pid_namespace_complete = true\nmin_age = "0s"\n'
        '[owners.gid]\nunit = "gidsvc.service"\nkeys = ["0x100000a0-0x100000af"]\n'
    )
    r = run("hidepid_gid", tmp_path, policy)
    assert r["member"]["0x100000a4"][0] == "stale"
    # not in the group: /proc hides others' processes from it, but the cgroup tree does not
    # (issue 20): gidsvc.service has no cgroup with a process in it, so it is stopped
    verdict, reason = r["outsider"]["0x100000a4"]
    assert verdict == "stale", reason
    assert "cannot tell whether gidsvc.service is running" not in reason

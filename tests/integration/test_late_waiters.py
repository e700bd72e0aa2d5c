"""A waiter that arrives during a long sweep keeps its queue (issue 16, the queue risk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces
from .late_scenarios import FIRST_KEY, QUEUES

pytestmark = [pytest.mark.integration, needs_namespaces]

POLICY = """
min_age = "0s"
pid_namespace_complete = true
[owners.queues]
keys = ["0x30010000-0x3001ffff"]
keep_queued_messages = false
"""


def test_a_consumer_that_starts_waiting_mid_sweep_keeps_its_queue(tmp_path: Path) -> None:
    r = in_namespace("late_queue_waiter", POLICY, tmp_path, module="late_scenarios")
    assert r["rc"] == 0, r["stderr"]
    last = f"0x{FIRST_KEY + QUEUES - 1:08x}"
    verdict, reason = r["last"]
    assert verdict == "changed", reason
    assert f"pid {r['consumer']} is blocked in msgrcv on it" in reason
    assert r["still_waiting"] and r["left"] == [last]  # it never saw EIDRM
    assert r["removed"] == QUEUES - 1  # every other queue: dead, and nobody waits on it

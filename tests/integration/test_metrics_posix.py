"""The timer's metrics export doctor's POSIX queue rows (issue 21.1): the queues against
fs.mqueue.queues_max and a user's RLIMIT_MSGQUEUE charge, with the values doctor shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

POLICY = 'min_age = "0s"\npid_namespace_complete = true\n[owners.apps]\nnames = ["psm_*"]\n'


def _series(text: str, name: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["kind"], s.labels["measure"], s.labels["limit"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


def test_the_timers_metrics_carry_the_queue_rows_doctor_shows(tmp_path: Path) -> None:
    r = in_namespace("metrics_queue_rows", POLICY, tmp_path, module="posix_scenarios",
                     posix=True)  # fmt: skip
    assert r["clean_rc"] == 0, r["stderr"]
    used = _series(r["metrics"], "ipcjanitor_table_used")
    most = _series(r["metrics"], "ipcjanitor_table_limit")
    queues = ("posix-mq", "queues", "fs.mqueue.queues_max")
    charge = ("posix-mq", "bytes of uid 65534", "RLIMIT_MSGQUEUE")
    assert (used.get(queues), most.get(queues)) == (3, 4), used
    assert (used.get(charge), most.get(charge)) == (82880, 90000), used
    for kind, measure, _limit in (queues, charge):  # the same figures as doctor's rows
        row = r["doctor"][f"{kind} {measure}"]
        assert (row["used"], row["max"]) == (used[(kind, measure, row["limit"])],
                                             most[(kind, measure, row["limit"])])  # fmt: skip

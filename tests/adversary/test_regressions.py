"""Schedules the harness once failed on (or their safe companions), replayed step by step.

Each file in regressions/ holds the steps, how it was found and why it matters. One with
"known_gap" reproduces an open defect of ipcjanitor and lists the violations it shows
("expect_violations"): the test pins them, so the fix that closes the gap makes it fail,
saying so (then drop "known_gap" and "expect_violations": the schedule must keep every
promise from then on).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.adversary import outside
from tests.adversary.test_adversary import WHY_NOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.adversary,
    pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT)),
]
FILES = sorted((Path(__file__).parent / "regressions").glob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_replayed_schedule(path: Path) -> None:
    doc: dict[str, Any] = json.loads(path.read_text())
    r = outside.schedule(0, replay=doc["steps"])
    assert r["executed"] == len(doc["steps"]), r
    assert not r["model_errors"] and not r["harness_error"], r
    found = sorted({v["what"] for v in r["violations"]})
    if doc.get("known_gap"):
        assert found == doc["expect_violations"], (
            f"{path.name}: the known gap seems closed ({doc['known_gap']}); drop known_gap "
            f"and expect_violations from it. Violations now: {r['violations']}"
        )
    else:
        assert found == [], f"{doc['why']}\n{json.dumps(r['violations'], indent=1)}"

"""packaging/prometheus/ipcjanitor.rules.yml: valid for Debian's promtool, and its alerts fire
(and stay quiet) as ipcjanitor.rules.test.yml says: table near its limit or filling up, runs
failing, stale objects piling up, a stuck pipe, owners without a hook."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent / "packaging" / "prometheus"
PROMTOOL = shutil.which("promtool")
need = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian: prometheus) is missing")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], check=False, cwd=HERE, capture_output=True, text=True, timeout=120
    )


@need
def test_the_rules_check() -> None:
    r = promtool("check", "rules", "ipcjanitor.rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@need
def test_the_rules_unit_tests_pass() -> None:
    r = promtool("test", "rules", "ipcjanitor.rules.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


@need
def test_every_alert_has_a_unit_test() -> None:
    rules = (HERE / "ipcjanitor.rules.yml").read_text()
    tests = (HERE / "ipcjanitor.rules.test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines()
              if line.strip().startswith("- alert:")]  # fmt: skip
    assert len(alerts) == 11
    assert all(f"alertname: {a}\n" in tests for a in alerts)


@need
def test_what_ipcjanitor_writes_passes_promtool_check_metrics(tmp_path: Path) -> None:
    from ipcjanitor.output import metrics

    out = tmp_path / "m.prom"
    metrics.write(str(out), [], 0.0, 1.0, run=metrics.Run("hook", 'odd"unit\\x.service'))
    text = out.read_text() + "".join(
        f.render(metrics.Run("hook", "u").labels())
        for f in metrics.health_families([], 1, [{"owner": "a", "unit": "a.service"}])
    )
    r = subprocess.run([PROMTOOL or "promtool", "check", "metrics"], check=False, input=text,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr

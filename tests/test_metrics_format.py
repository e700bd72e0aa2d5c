"""The text exposition format ipcjanitor writes itself (no prometheus_client at run time):
labels that keep the timer's file and each hook's file apart, escaping, and what a reader
(prometheus_client's parser, as node_exporter's would) makes of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipcjanitor.output import metrics

CLEAN = metrics.Run("clean", "ipcjanitor.service")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def written(path: Path, run: metrics.Run = CLEAN) -> str:
    metrics.write(str(path), [], 0.0, 1.0, run=run)
    return path.read_text()


def test_every_series_says_who_wrote_it(tmp_path: Path) -> None:
    text = written(tmp_path / "hook-a.prom", metrics.Run("hook", "a.service"))
    got = samples(text)
    assert got and all(("source", "hook") in k and ("unit", "a.service") in k for _, k in got)


def test_the_timer_file_and_two_hook_files_share_no_series(tmp_path: Path) -> None:
    runs = [CLEAN, metrics.Run("hook", "a.service"), metrics.Run("hook", "b.service")]
    files = [samples(written(tmp_path / f"{i}.prom", r)) for i, r in enumerate(runs)]
    union = [key for f in files for key in f]
    assert len(union) == len(set(union)) and all(files)


@pytest.mark.parametrize("unit", ['we"ird\\unit\nname.service', "x@1.service", ""])
def test_label_values_are_escaped_as_the_format_says(tmp_path: Path, unit: str) -> None:
    text = written(tmp_path / "m.prom", metrics.Run("hook", unit))
    assert all(dict(k)["unit"] == unit for _, k in samples(text))
    assert metrics.parse(text) == samples(text)  # ours reads back what any reader reads


def test_the_file_parses_the_same_with_prometheus_client(tmp_path: Path) -> None:
    text = written(tmp_path / "m.prom")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "ipcjanitor_removed_objects" in names and not any("_created" in n for n in names)
    assert metrics.parse(text) == samples(text)


def test_counters_carry_over_per_writer(tmp_path: Path) -> None:
    out = tmp_path / "m.prom"
    out.write_text(
        "# TYPE ipcjanitor_removed_objects_total counter\n"
        'ipcjanitor_removed_objects_total{source="clean",unit="ipcjanitor.service",kind="shm"} 4.0\n'
    )
    got = samples(written(out))
    assert got[("ipcjanitor_removed_objects_total",
                (("kind", "shm"), ("source", "clean"), ("unit", "ipcjanitor.service")))] == 4.0  # fmt: skip


def test_writing_metrics_imports_no_prometheus_client(tmp_path: Path) -> None:
    code = (
        "import sys; from ipcjanitor.output import metrics; "
        f"metrics.write({str(tmp_path / 'm.prom')!r}, [], 0.0, 1.0, run=metrics.Run('hook', 'a'));"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_own_unit_is_the_service_or_nothing(tmp_path: Path) -> None:
    f = tmp_path / "cgroup"
    f.write_text("0::/system.slice/ipcjanitor.service\n")
    assert metrics.own_unit(str(f)) == "ipcjanitor.service"
    f.write_text("0::/user.slice/user-1000.slice/session-3.scope\n")
    assert metrics.own_unit(str(f)) == ""

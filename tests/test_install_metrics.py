"""`install-hook --metrics FILE`: written into the drop-in's hook line, kept on a re-run."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ipcjanitor.errors import UsageError
from ipcjanitor.hook import install as hook

LINE = "ExecStopPost=-+/x/ipcjanitor-hook /usr/bin/ipcjanitor hook --unit=%n"


def test_the_hook_line_gets_the_file() -> None:
    word = hook.metrics_word("/var/lib/prometheus/node-exporter/ipcjanitor-%n.prom", "a.service")
    assert word == "--metrics=/var/lib/prometheus/node-exporter/ipcjanitor-%n.prom"


def test_a_file_name_with_a_space_is_quoted_and_read_back() -> None:
    word = hook.metrics_word("/srv/my metrics/a.prom", "a.service")
    assert hook.kept_metrics(hook.dropin_text(f"{LINE[15:]} {word}")) == "/srv/my metrics/a.prom"
    assert shlex.split(word) == ["--metrics=/srv/my metrics/a.prom"]


def test_a_template_needs_a_file_per_instance() -> None:
    with pytest.raises(UsageError, match=r"every instance of worker@\.service"):
        hook.metrics_word("/m/worker.prom", "worker@.service")
    assert (
        hook.metrics_word("/m/worker-%i.prom", "worker@.service") == "--metrics=/m/worker-%i.prom"
    )


def test_a_percent_that_is_no_unit_specifier_is_refused() -> None:
    with pytest.raises(UsageError, match="%n, %N, %i or %I"):
        hook.metrics_word("/m/100%.prom", "a.service")


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        (f"{LINE} --metrics=/m/a.prom", "/m/a.prom"),
        (f"{LINE} --metrics /m/by-hand.prom", "/m/by-hand.prom"),  # added by hand
        (f'{LINE} "--metrics=/m/a b.prom"', "/m/a b.prom"),
        (LINE, None),
    ],
)
def test_the_file_is_read_back_from_an_existing_drop_in(line: str, kept: str | None) -> None:
    assert hook.kept_metrics(f"[Service]\n{line}\n") == kept


def test_a_re_run_keeps_the_file_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dropin = tmp_path / "ipcjanitor.conf"
    dropin.write_text(f"[Service]\n{LINE} --metrics /m/by-hand-%n.prom\n")
    assert hook._metrics(dropin, "a.service", None, False) == " --metrics=/m/by-hand-%n.prom"
    assert "kept --metrics /m/by-hand-%n.prom" in capsys.readouterr().out
    assert hook._metrics(dropin, "a.service", None, True) == ""  # --no-metrics
    assert hook._metrics(dropin, "a.service", "/m/new.prom", False) == " --metrics=/m/new.prom"
    assert hook._metrics(tmp_path / "none.conf", "a.service", None, False) == ""

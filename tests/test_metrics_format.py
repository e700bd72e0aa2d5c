"""The text exposition format ipcjanitor writes itself (no prometheus_client at run time):
labels that keep the timer's file and each hook's file apart, escaping, and what a reader
(prometheus_client's parser, as node_exporter's would) makes of it."""

from __future__ import annotations

import subprocess
import sys
import time
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


BAD_POLICY = "[owners.a]\nkeys = ['0x20-0x10']\n"  # a reversed range: exit 78
POLICY = '[owners.a]\nunit = "nohook-a.service"\nkeys = ["0x7ffffff0"]\nmin_age = "0s"\n'


def plain(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples, without the source and unit labels every one carries."""
    return {
        (name, tuple(kv for kv in labels if kv[0] not in ("source", "unit"))): v
        for (name, labels), v in samples(text).items()
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def clean(tmp_path: Path, policy: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from ipcjanitor.cli import main

    (tmp_path / "p.toml").write_text(policy)
    out = tmp_path / "m.prom"
    rc = main(["-q", "--policy", str(tmp_path / "p.toml"), "clean", "--metrics", str(out)])
    capsys.readouterr()
    return rc, out.read_text()


def test_a_policy_error_still_writes_the_file(
    tmp_path: Path, cleaned: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, text = clean(tmp_path, BAD_POLICY, capsys)
    got = plain(text)
    assert rc == 78 and cleaned == []
    assert got[("ipcjanitor_last_run_exit_code", ())] == 78
    assert got[("ipcjanitor_policy_ok", ())] == 0
    assert got[("ipcjanitor_last_success_timestamp_seconds", ())] == 0
    assert (
        key("ipcjanitor_table_limit", kind="shm", measure="objects", limit="kernel.shmmni") in got
    )
    assert ("ipcjanitor_owners_without_hook", ()) not in got  # unknown without a policy


def test_the_hook_writes_the_file_on_a_policy_error(
    tmp_path: Path, cleaned: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    from ipcjanitor.hook.gate import HookCall
    from ipcjanitor.hook.run import run_hook

    (tmp_path / "p.toml").write_text(BAD_POLICY)
    out = tmp_path / "hook.prom"
    rc = run_hook(HookCall("a.service", str(tmp_path / "p.toml"), False, str(out), True))
    got = samples(out.read_text())
    common = (("source", "hook"), ("unit", "a.service"))
    assert rc == 78 and got[("ipcjanitor_policy_ok", common)] == 0
    assert got[("ipcjanitor_last_run_exit_code", common)] == 78
    assert not any(name.startswith("ipcjanitor_table_") for name, _ in got)  # not in the hook


def test_a_clean_run_exports_what_doctor_knows(
    tmp_path: Path, cleaned: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, text = clean(tmp_path, POLICY, capsys)
    got = plain(text)
    shmmni = int(Path("/proc/sys/kernel/shmmni").read_text())
    semmns = int(Path("/proc/sys/kernel/sem").read_text().split()[1])
    assert rc == 0 and len(cleaned) == 1
    assert got[("ipcjanitor_last_run_exit_code", ())] == 0 and got[("ipcjanitor_policy_ok", ())]
    limit = "ipcjanitor_table_limit"
    assert got[key(limit, kind="shm", measure="objects", limit="kernel.shmmni")] == shmmni
    assert got[key(limit, kind="sem", measure="semaphores", limit="kernel.sem semmns")] == semmns
    used = {dict(labels)["limit"] for name, labels in got if name == "ipcjanitor_table_used"}
    assert {"kernel.shmall", "kernel.sem semmni", "kernel.msgmni", "/dev/shm size",
            "/dev/shm nr_inodes"} <= used  # fmt: skip
    assert ("ipcjanitor_stuck_pipes", ()) in got
    assert got[("ipcjanitor_owners_without_hook", ())] == 1
    assert got[key("ipcjanitor_owner_without_hook", owner="a", hooked_unit="nohook-a.service")]
    assert got[key("ipcjanitor_owner_objects", owner="a", verdict="removed")] == 0


def test_per_owner_series_only_where_cardinality_allows(
    tmp_path: Path, cleaned: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    many = "".join(f'[owners.o{i}]\nkeys = ["{0x7FFF0000 + i:#x}"]\n' for i in range(101))
    _, text = clean(tmp_path, many, capsys)
    assert "ipcjanitor_owner_objects" not in text and "ipcjanitor_objects{" in text


def test_the_duration_is_the_whole_run_on_the_monotonic_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter([100.0, 102.5])
    monkeypatch.setattr(time, "monotonic", lambda: next(ticks))
    monkeypatch.setattr(time, "time", lambda: 5.0)  # the wall clock stepped back
    out = tmp_path / "m.prom"
    assert metrics.recording(str(out), CLEAN, lambda o: 0) == 0
    got = plain(out.read_text())
    assert got[("ipcjanitor_run_duration_seconds", ())] == 2.5
    assert got[("ipcjanitor_last_run_timestamp_seconds", ())] == 5.0


def test_a_run_that_raises_still_writes_its_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "m.prom"

    def body(o: metrics.Outcome) -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        metrics.recording(str(out), CLEAN, body)
    assert plain(out.read_text())[("ipcjanitor_last_run_exit_code", ())] == 70


def test_what_doctor_cannot_read_is_left_out_not_the_file(tmp_path: Path) -> None:
    out = tmp_path / "m.prom"

    def health(o: metrics.Outcome) -> list[metrics.Family]:
        raise PermissionError(13, "Permission denied", "/proc/1/fd")

    assert metrics.recording(str(out), CLEAN, lambda o: 0, health) == 0
    text = out.read_text()
    assert "ipcjanitor_last_run_exit_code" in text and "ipcjanitor_table_" not in text


HOOKED = '[owners.a]\nunit = "a.service"\nkeys = ["0x7ffffff0"]\nmin_age = "0s"\n'


def test_a_hook_that_gave_up_on_the_lock_says_so_and_moves_no_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lock busy past the hook's wait: exit 0 (a stop never fails for it), but nothing was
    cleaned, so the file says it gave up, counts it, and keeps the last success where it was."""
    from ipcjanitor.engine import lock, run
    from ipcjanitor.hook.gate import HookCall
    from ipcjanitor.hook.run import run_hook

    (tmp_path / "p.toml").write_text(HOOKED)
    out = tmp_path / "hook.prom"
    call = HookCall("a.service", str(tmp_path / "p.toml"), False, str(out), True)
    common = (("source", "hook"), ("unit", "a.service"))
    monkeypatch.setattr(time, "time", lambda: 1000.0)
    monkeypatch.setattr(run, "clean", lambda *a, **k: ([], None))
    assert run_hook(call) == 0
    got = samples(out.read_text())
    assert got[("ipcjanitor_last_run_gave_up", common)] == 0
    assert got[("ipcjanitor_gave_up_total", common)] == 0
    assert got[("ipcjanitor_last_success_timestamp_seconds", common)] == 1000.0

    def busy(*args: object, **kwargs: object) -> None:
        raise lock.LockBusy("the run lock is held by pid 7; nothing was removed")

    monkeypatch.setattr(run, "clean", busy)
    for n, now in ((1, 2000.0), (2, 3000.0)):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        assert run_hook(call) == 0
        got = samples(out.read_text())
        assert got[("ipcjanitor_last_run_exit_code", common)] == 0
        assert got[("ipcjanitor_last_run_gave_up", common)] == 1
        assert got[("ipcjanitor_gave_up_total", common)] == n
        assert got[("ipcjanitor_last_run_timestamp_seconds", common)] == now
        assert got[("ipcjanitor_last_success_timestamp_seconds", common)] == 1000.0
    monkeypatch.setattr(run, "clean", lambda *a, **k: ([], None))
    assert run_hook(call) == 0
    got = samples(out.read_text())
    assert got[("ipcjanitor_last_run_gave_up", common)] == 0
    assert got[("ipcjanitor_gave_up_total", common)] == 2  # a counter: carried forward
    capsys.readouterr()

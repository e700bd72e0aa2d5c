"""The command line: exit codes, usage errors, policy check. Read-only commands only here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipcjanitor.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_usage_errors_exit_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 64
    with pytest.raises(SystemExit) as info:
        main(["scan", "--kind", "pipe"])
    assert info.value.code == 64
    assert main([]) == 64


def test_policy_check_prints_owners(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.billing]\nunit = "billing.service"\nkeys = ["0x61040000-0x6104ffff"]\n')
    rc, out, _ = run(capsys, "policy", "check", str(p))
    assert rc == 0
    assert "[billing]" in out and "0x61040000-0x6104ffff" in out and "billing.service" in out
    assert out.rstrip().endswith("policy OK")


def test_policy_errors_exit_78_and_name_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\nbogus = 1\n')
    rc, _, err = run(capsys, "--policy", str(p), "scan")
    assert rc == 78
    assert f"{p}:3: [owners.a] unknown field 'bogus'" in err and "nothing was removed" in err
    rc, _, err = run(capsys, "policy", "check", str(p))
    assert rc == 78


def test_unknown_owner_filter_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    rc, _, err = run(capsys, "--policy", str(p), "scan", "--owner", "nope")
    assert rc == 64 and "no owner named nope" in err and "owners: a" in err


def test_scan_json_is_one_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # read-only: scanning the host's tables never changes them
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    rc, out, _ = run(capsys, "--policy", str(p), "scan", "--json", "--kind", "shm")
    assert rc == 0
    doc = json.loads(out)
    assert set(doc) == {"objects", "summary"}
    assert doc["summary"]["total"] == len(doc["objects"])
    assert all(o["kind"] == "shm" for o in doc["objects"])


def test_quiet_prints_only_the_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    rc, out, _ = run(capsys, "--policy", str(p), "-q", "scan")
    assert rc == 0 and len(out.splitlines()) == 1 and "object" in out


def test_metrics_without_prometheus_client_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    empty = tmp_path / "p.toml"
    empty.write_text("min_age = '1h'\n")  # no owners: even if it ran, nothing could be removed
    rc, _, err = run(capsys, "--policy", str(empty), "clean", "--metrics", str(tmp_path / "m.prom"))
    assert rc == 64
    assert err.strip().count("\n") == 0 and "python3-prometheus-client" in err
    assert not (tmp_path / "m.prom").exists()

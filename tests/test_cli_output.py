"""lsipc's and systemctl's options on scan: -o, --raw, --noheadings, --no-legend, --bytes,
--id/--key, REASON cut to a terminal's width, colour only on a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ipcjanitor import cli
from ipcjanitor.commands import table
from ipcjanitor.engine.run import Scope
from ipcjanitor.output import terminal

from .test_golden import DECISIONS


@pytest.fixture
def scan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Any:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    scopes: list[Scope] = []

    def survey(policy: object, scope: Scope) -> list[Any]:
        scopes.append(scope)
        return [d for d in DECISIONS if scope.picks(d.obj)]

    monkeypatch.setattr(table, "survey", survey)

    def run(*argv: str) -> tuple[int, str, list[Scope]]:
        rc = cli.main(["--policy", str(p), "scan", *argv])
        return rc, capsys.readouterr().out, scopes

    return run


def test_output_raw_noheadings_bytes(scan: Any) -> None:
    rc, out, _ = scan("-o", "KEY,SIZE,REASON", "--raw", "--noheadings", "--bytes", "--no-legend")
    assert rc == 0
    assert out.splitlines()[0] == (
        "0x6104e88b 1048576 creator\\x20pid\\x20812\\x20and\\x20last\\x20attacher\\x20pid"
        "\\x20813\\x20are\\x20dead;\\x20nothing\\x20attached"
    )
    assert len(out.splitlines()) == len(DECISIONS)  # no header, no note, no summary


def test_plus_output_appends_and_an_unknown_column_is_a_usage_error(scan: Any) -> None:
    _, out, _ = scan("-o", "+UID")
    assert out.splitlines()[0].split()[-1] == "UID"
    rc, _, _ = scan("-o", "BOGUS")
    assert rc == 64


def test_id_and_key_filter(scan: Any) -> None:
    _, out, scopes = scan("--key", "0x6104e88b", "--id", "2", "--raw", "--noheadings", "-o", "ID")
    assert scopes[-1].keys == {0x6104E88B} and scopes[-1].ids == {2}
    assert out.splitlines()[0] == "2"


def test_the_policy_owner_and_the_user_are_two_columns(scan: Any) -> None:
    _, out, _ = scan()
    head = out.splitlines()[0].split()
    assert head[:6] == ["KIND", "KEY", "ID", "POLICY", "OWNER", "PERMS"]
    assert {"SIZE", "NSEMS", "MSGS"} <= set(head)


def test_on_a_terminal_reason_fits_and_verdicts_are_coloured(
    scan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terminal, "on_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    _, out, _ = scan("--no-pager")
    lines = out.splitlines()
    assert "\x1b[" in out
    plain = [line.replace("\x1b[0m", "").split("\x1b[")[0] for line in lines[:3]]
    assert all(len(x) <= 100 for x in plain)
    _, whole, _ = scan("--no-pager", "--notruncate")
    assert "nothing attached" in whole
    monkeypatch.setenv("NO_COLOR", "1")
    _, plain_out, _ = scan("--no-pager")
    assert "\x1b[" not in plain_out


def test_not_a_terminal_is_never_coloured_or_cut(scan: Any) -> None:
    _, out, _ = scan()
    assert "\x1b[" not in out and "nothing attached" in out

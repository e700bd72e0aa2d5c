"""The pager (systemctl's conventions): on a terminal the output goes through $SYSTEMD_PAGER,
$PAGER or less with LESS=FRSXMK (or $SYSTEMD_LESS); never with --no-pager, off a terminal,
or for a pager of "cat"; a pager that cannot start leaves the output on stdout (issue 21.3)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ipcjanitor import cli
from ipcjanitor.commands import table
from ipcjanitor.output import terminal

from .test_golden import DECISIONS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def scan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Any:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    monkeypatch.setattr(table, "survey", lambda policy, scope: list(DECISIONS))
    for name in ("SYSTEMD_PAGER", "PAGER", "SYSTEMD_LESS", "LESS"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> str:
        assert cli.main(["--policy", str(p), "scan", *argv]) == 0
        return capsys.readouterr().out

    return run


@pytest.fixture
def pager(tmp_path: Path) -> Path:
    """A pager that keeps what it was given, and its LESS, in files."""
    script = tmp_path / "fake-pager"
    script.write_text(f'#!/bin/sh\nprintf %s "$LESS" > {tmp_path}/less\ncat > {tmp_path}/paged\n')
    script.chmod(0o755)
    return script


def test_on_a_terminal_the_table_goes_through_the_pager(
    scan: Any, pager: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terminal, "on_terminal", lambda: True)
    monkeypatch.setenv("PAGER", "false")  # SYSTEMD_PAGER comes first
    monkeypatch.setenv("SYSTEMD_PAGER", str(pager))
    assert scan() == ""
    paged = (pager.parent / "paged").read_text()
    assert paged.splitlines()[0].split()[:3] == ["KIND", "KEY", "ID"]
    assert (pager.parent / "less").read_text() == "FRSXMK"  # quits at once if it fits
    monkeypatch.setenv("SYSTEMD_LESS", "R")
    scan()
    assert (pager.parent / "less").read_text() == "R"


def test_no_pager_off_a_terminal_or_cat(
    scan: Any, pager: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGER", str(pager))
    assert "KIND" in scan()  # stdout is no terminal here
    monkeypatch.setattr(terminal, "on_terminal", lambda: True)
    assert "KIND" in scan("--no-pager")
    for chosen in ("cat", "", "/nonexistent/pager"):
        monkeypatch.setenv("PAGER", chosen)
        assert terminal.pager_command() is None
        assert "KIND" in scan()
    assert not (pager.parent / "paged").exists()


def test_a_pager_that_cannot_start_leaves_the_output_on_stdout(
    scan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terminal, "on_terminal", lambda: True)
    monkeypatch.setattr(terminal, "pager_command", lambda: ["/nonexistent/pager"])
    assert "KIND" in scan()


def test_real_less_on_a_pty_quits_at_once_when_the_table_fits(tmp_path: Path) -> None:
    """Real less on a real terminal: the table fits one screen, so less -F prints it and
    exits without a key pressed (a pager waiting for one would hang the command)."""
    code = (
        "from ipcjanitor import cli; from ipcjanitor.commands import table; "
        "from tests.test_golden import DECISIONS; "
        "table.survey = lambda policy, scope: list(DECISIONS[:2]); "
        f"raise SystemExit(cli.main(['--policy', {str(tmp_path / 'p.toml')!r}, 'scan']))"
    )
    (tmp_path / "p.toml").write_text('[owners.a]\nkeys = ["0x10"]\n')
    env = {k: v for k, v in os.environ.items() if k not in ("SYSTEMD_PAGER", "PAGER", "LESS")}
    env |= {"PAGER": "less", "TERM": "xterm", "COLUMNS": "200", "LINES": "50",
            "PYTHONPATH": str(ROOT)}  # fmt: skip
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=follower, stdout=follower,
                            stderr=follower, env=env, cwd=ROOT)  # fmt: skip
    os.close(follower)
    seen = b""
    end = time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < end:
            if select.select([leader], [], [], 0.1)[0]:
                try:
                    seen += os.read(leader, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: every holder of the terminal closed it
                    break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(end - time.monotonic(), 0.1))
        assert proc.poll() == 0, f"less waited for a key: {seen[-500:]!r}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(leader)
    assert b"KIND" in seen and b"0x6104e88b" in seen

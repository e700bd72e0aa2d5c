"""The shipped units: hardened as claimed, every directive explained, nothing that blinds."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).parent.parent / "units"
SERVICE = UNITS / "ipcjanitor.service"
NOT_HARDENING = {"Type", "ExecStart"}
BLINDING = ("PrivateIPC", "IPCNamespacePath", "ProcSubset", "ProtectProc", "PrivateUsers",
            "User", "DynamicUser", "PrivatePIDs")  # fmt: skip


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_exposure_is_at_most_2_0() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(SERVICE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    assert level <= 2.0


def service_lines() -> list[str]:
    text = SERVICE.read_text().split("[Service]\n", 1)[1]
    return text.splitlines()


def test_every_hardening_directive_has_a_reason_above_it() -> None:
    lines = service_lines()
    for i, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if key not in NOT_HARDENING:
            assert lines[i - 1].startswith("# "), f"{line!r} has no reason on the line above"


def test_nothing_that_would_blind_it_and_each_absence_is_explained() -> None:
    keys = {ln.split("=", 1)[0] for ln in service_lines() if ln and not ln.startswith("#")}
    assert not keys & set(BLINDING)
    comments = "\n".join(ln for ln in service_lines() if ln.startswith("#"))
    for key in BLINDING:
        assert f"{key}=" in comments, f"say why {key}= is absent"

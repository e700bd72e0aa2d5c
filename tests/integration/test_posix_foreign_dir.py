"""A /dev/shm subdirectory uid 4401 owns (mode 0700), two files inside it claimed by a
policy and unused: what scan and clean do as full root, with only the shipped unit's
capabilities (units/ipcjanitor.service, CapabilityBoundingSet=), and as another user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

SERVICE = Path(__file__).resolve().parents[2] / "units" / "ipcjanitor.service"
POLICY = """\
pid_namespace_complete = true

[owners.app]
names = ["app/psm_*", "pub/psm_*", "psm_*"]
min_age = "0s"
"""
FILES = ["app/psm_a", "app/psm_b", "pub/psm_c"]


def shipped_caps() -> str:
    """The unit's CapabilityBoundingSet= as a setpriv --bounding-set list."""
    line = next(ln for ln in SERVICE.read_text().splitlines()
                if ln.startswith("CapabilityBoundingSet="))  # fmt: skip
    caps = line.split("=", 1)[1].split()
    assert "CAP_DAC_OVERRIDE" not in caps and "CAP_DAC_READ_SEARCH" in caps, caps
    return ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])


def _run(scenario: str, tmp: Path, *extra: str) -> Any:
    return in_namespace(scenario, POLICY, tmp, *extra, module="posix_dir_scenarios", posix=True)


def test_the_shipped_capabilities_never_touch_another_users_directory(tmp_path: Path) -> None:
    """CAP_DAC_READ_SEARCH lists, stats, opens and locks the files (scan judges them), but
    removing one needs write access to the 0700 directory, CAP_DAC_OVERRIDE, which the unit
    does not have: each file is `failed`, the reason saying whose directory and what it
    would take, nothing inside is touched, and the run exits 1 (a removal failed)."""
    r = _run("foreign_dir_shipped_caps", tmp_path, shipped_caps())
    assert {n: v for n, (v, _) in r["scan"].items()} == dict.fromkeys(FILES, "stale"), r
    assert r["left"] == ["psm_a", "psm_b", "psm_c"], r
    assert r["top"] == ["app", "pub"], r  # no directory of its own left behind
    for name, why in [("app/psm_a", "EACCES"), ("app/psm_b", "EACCES"), ("pub/psm_c", "EPERM")]:
        verdict, reason = r["clean"][name]
        assert verdict == "failed", r["clean"]
        directory = "/dev/shm/" + name.split("/")[0]
        assert why in reason and f"its directory {directory} is uid 4401's" in reason, reason
    assert "0700" in r["clean"]["app/psm_a"][1] and "CAP_DAC_OVERRIDE" in r["clean"]["app/psm_a"][1]
    assert "1777" in r["clean"]["pub/psm_c"][1] and "CAP_FOWNER" in r["clean"]["pub/psm_c"][1]
    assert r["rc"] == [0, 1], r


def test_full_root_judges_and_removes_inside_another_users_directory(tmp_path: Path) -> None:
    """Root with every capability may remove there: the files are claimed and unused, and
    the walk and the rename aside check every inode (the contract, whoever owns the
    directory)."""
    r = _run("foreign_dir_full_root", tmp_path)
    assert {n: v for n, (v, _) in r["clean"].items()} == dict.fromkeys(FILES, "removed"), r
    assert (r["left"], r["top"], r["rc"]) == ([], ["app", "pub"], [0, 0]), r


def test_a_directory_another_user_may_not_enter_is_said_so(tmp_path: Path) -> None:
    """As uid 4402 the 0700 directory cannot be opened: the note says so (EACCES), not that
    it changed during the walk; nothing inside is listed or touched, and no removal failed."""
    r = _run("foreign_dir_stranger", tmp_path)
    assert not any(name.startswith("posix-shm:app/") for name in r["scan"]), r
    assert "/dev/shm/app cannot be entered (Permission denied): not looked into" in r["notes"], r
    assert not any("changed during the walk" in n for n in r["notes"]), r
    assert (r["left"], r["rc"]) == (["psm_a", "psm_b", "psm_c"], [0, 0]), r

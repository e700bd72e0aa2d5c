"""learn beside another running root service, with real processes (issue 16, item 5)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces
from .learn_scenarios import BETWEEN, OURS, THEIRS, THEIRS_TOO

pytestmark = [pytest.mark.integration, needs_namespaces]


def test_learn_claims_neither_another_services_segment_nor_a_range_across_its_keys(
    tmp_path: Path, cgroup_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IJ_CGROUP", str(cgroup_base))
    r = in_namespace("learn_beside_another_root_service", "", tmp_path, module="learn_scenarios")
    assert r["rc"] == 0, r["stderr"]
    owner = tomllib.loads(r["written"])["owners"]["learned"]
    # the master's keys, each alone: a range would span other.service's two
    assert owner["keys"] == [f"0x{k:08x}" for k in OURS], r["written"]
    assert "private" not in owner and "ftok" not in owner
    assert "# HINT" not in r["written"]  # no block offered that holds other.service's keys
    pids = r["pids"]
    for key, why in [
        (THEIRS, f"attached by pid {pids['client']} (otherc) of other.service too"),
        (THEIRS_TOO, f"created by pid {pids['daemon']} (otherd) of other.service"),
    ]:
        label = f"shm id {r['shmids'][f'0x{key:08x}']} (key 0x{key:08x}): "
        assert f"# NOT CLAIMED: {label}" in r["written"], r["written"]
        assert why in r["written"].split(f"# NOT CLAIMED: {label}")[1].splitlines()[0]
        assert f"not claimed: {label}" in r["stderr"]
    # the unit stopped: its hook removes its own, and nothing of the running other.service
    removed = sorted(k for k, (v, _) in r["hook"].items() if v == "removed")
    assert removed == [f"0x{k:08x}" for k in OURS], r["hook"]
    assert r["left"] == sorted(f"0x{k:08x}" for k in (*BETWEEN, THEIRS, THEIRS_TOO))

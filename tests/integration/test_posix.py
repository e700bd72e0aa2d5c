"""POSIX IPC with real objects of real processes, in private IPC, mount and pid namespaces
with a fresh tmpfs on /dev/shm and a fresh mqueue on /dev/mqueue."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]


def run(scenario: str, tmp: Path, policy: str = "") -> dict:  # type: ignore[type-arg]
    return in_namespace(scenario, policy, tmp, module="posix_scenarios", posix=True)  # type: ignore[no-any-return]


def test_shm_files_semaphores_and_queues_are_listed_by_kind(tmp_path: Path) -> None:
    r = run("listing", tmp_path)
    assert r["objects"] == [
        ["posix-shm", "app/buf0", None, None],
        ["posix-shm", "psm_a", None, None],
        ["posix-sem", "jack_sem.0", None, None],
        ["posix-mq", "q0", 0, None],
        ["posix-mq", "q1", 3, None],
    ]
    assert r["notes"] == []


def test_an_unmounted_mqueue_is_said(tmp_path: Path) -> None:
    r = run("mqueue_unmounted", tmp_path)
    assert r["objects"] == []
    assert r["notes"] == [
        "/dev/mqueue is not mounted (no mqueue filesystem there): POSIX message queues "
        "were not listed (mount -t mqueue mqueue /dev/mqueue)"
    ]


def test_every_way_of_holding_is_seen_and_gone_after_sigkill(tmp_path: Path) -> None:
    r = run("holders_alive_and_killed", tmp_path)
    pid = r["pids"]
    alive = r["alive"]
    assert alive["posix-shm:map_only"] == [f"mapped by pid {pid['mapped']} (python)"]
    assert [h.split(" (")[0] for h in alive["posix-shm:fd_only"]] == [f"fd 3 of pid {pid['fd']}"]
    assert f"LOCK_SH by pid {pid['lock_sh']}" in alive["posix-shm:locked"]
    assert any(h.startswith("OFD read lock by pid -1") for h in alive["posix-shm:ofd_locked"])
    assert any(h.startswith(f"mapped by pid {pid['sem']} ") for h in alive["posix-sem:sem1"])
    assert any(h.startswith(f"fd 3 of pid {pid['mq_reader']} ") for h in alive["posix-mq:reader_q"])
    psm = alive["posix-shm:psm_test"]
    assert any(h.startswith(f"mapped by pid {pid['shared_memory']} ") for h in psm)
    assert r["blind"] == [None, None]
    # outside the host's pid namespace, unless pid_namespace_complete, a holder may hide
    assert "outside the host's pid namespace" in r["blind_unstated"]
    assert all(v == [] for v in r["dead"].values()), r["dead"]
    assert len(r["dead"]) == 7

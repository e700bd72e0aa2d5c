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

"""POSIX holders that /proc/PID/fd and /proc/PID/maps do not show (scenarios in
posix_attack.py, run in private IPC, mount and pid namespaces with fresh /dev/shm and
/dev/mqueue). Each asserts the safe behaviour: a held object is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

# the private pid namespace holds every process of the private IPC and mount namespaces
POLICY = """\
pid_namespace_complete = true

[owners.app]
names = ["q_*", "psm_*"]
min_age = "0s"
"""


def _run(scenario: str, tmp: Path) -> Any:
    return in_namespace(scenario, POLICY, tmp, module="../attack_findings/posix_attack", posix=True)


def test_a_queue_held_only_in_a_threads_own_fd_table_is_kept(tmp_path: Path) -> None:
    """A thread with an fd table of its own (unshare(CLONE_FILES)) has its fds read even
    while its leader shows maps (kcmp tells the tables apart): a queue has no lease to fall
    back on, and the scan calls the file held, not stale (once a known gap, session 5)."""
    r = _run("thread_fd_table", tmp_path)
    for name in ("posix-shm:psm_thread", "posix-mq:q_thread"):  # seen, not kept for blindness
        verdict, reason = r["scan"][name]
        assert verdict == "in-use" and " of thread " in reason, r
    assert "mq:q_thread" in r["left"], r
    assert r["clean"]["posix-mq:q_thread"][0] != "removed", r["clean"]


def test_a_queue_held_only_by_a_thread_cloned_without_clone_files_is_kept(
    tmp_path: Path,
) -> None:
    """The other way to a table of its own: clone(CLONE_THREAD) without CLONE_FILES."""
    r = _run("thread_cloned_without_files", tmp_path)
    assert (r["ready"], r["tasks"]) == ("ready", 2), r
    verdict, reason = r["scan"]["posix-mq:q_clone"]
    assert verdict == "in-use" and " of thread " in reason, r
    assert r["clean"]["posix-mq:q_clone"][0] == "in-use", r
    assert "mq:q_clone" in r["left"], r


def test_held_a_file_held_only_in_a_threads_own_fd_table_is_kept_by_the_lease(
    tmp_path: Path,
) -> None:
    r = _run("thread_fd_table", tmp_path)
    assert "psm_thread" in r["left"], r


@pytest.mark.xfail(
    strict=True,
    reason="known gap (session 5 attack): an O_PATH fd in flight is "
    "neither a lease conflict nor in any /proc/PID/fd",
)
def test_a_file_whose_o_path_fd_is_in_flight_is_kept(tmp_path: Path) -> None:
    """The lease counts readers and writers; an O_PATH file is neither, and an fd in flight
    shows in no /proc/PID/fd. The receiver reopens the object read-write through it."""
    r = _run("opath_in_flight", tmp_path)
    assert r["scan"]["posix-shm:psm_opath"][0] == "stale", r  # no holder seen: the scan's word
    assert "psm_opath" in r["left"], r

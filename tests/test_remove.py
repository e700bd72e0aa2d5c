"""The remover's re-check and errno mapping, with the kernel calls replaced."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from ipcjanitor.engine import remove
from ipcjanitor.kernel.sysvipc import STAT_FIELDS, msg_object, shm_object
from ipcjanitor.kernel.tasks import QueueWaiters
from ipcjanitor.model import Decision, IpcKind, Verdict

BASE = {"key": 0x10, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "perms": 0o600, "size": 1,
        "atime": 100, "dtime": 100, "ctime": 90, "cpid": 5, "lpid": 5, "nattch": 0}  # fmt: skip


def raw(**changes: int) -> tuple[Any, ...]:
    """A shm record as the kernel gives it, with some fields changed."""
    return tuple({**BASE, **changes}[f] for f in STAT_FIELDS[IpcKind.SHM])


OBJ = shm_object(7, raw())
STALE = Decision(OBJ, "app", Verdict.STALE, "creator pid 5 exited")


class Kernel:
    """A fake _sysvipc.recheck_rmid: each object now reads as `now` (None: gone, an int: that
    errno on IPC_STAT); IPC_RMID fails with `rmid_errno` if set. Records what it removed."""

    def __init__(self, now: tuple[Any, ...] | int | None = None, rmid_errno: int = 0) -> None:
        self.now = now
        self.rmid_errno = rmid_errno
        self.removed: list[tuple[int, int]] = []

    def __call__(self, kind: int, items: list[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        out: list[Any] = []
        for ipc_id, judged in items:
            now = self.now
            if now is None:
                out.append(("stat", errno.EINVAL))
            elif isinstance(now, int):
                out.append(("stat", now))
            elif now != judged:
                out.append(("changed", now))
            elif self.rmid_errno:
                out.append(("rmid", self.rmid_errno))
            else:
                self.removed.append((kind, ipc_id))
                out.append(None)
        return out


def remove_one(d: Decision, kernel: Kernel) -> Decision:
    (out,) = remove.remove_stale([d], recheck=kernel)
    return out


@pytest.mark.parametrize(
    ("now", "verdict", "fragment"),
    [
        (None, Verdict.CHANGED, "vanished"),
        (raw(key=0x11), Verdict.CHANGED, "id was reused"),
        (raw(ctime=95), Verdict.CHANGED, "id was reused"),
        (raw(nattch=1), Verdict.CHANGED, "nattch changed"),
        (raw(lpid=6), Verdict.CHANGED, "pids changed"),
        (raw(atime=200), Verdict.CHANGED, "used since"),
        # IPC_SET giving it away within the second of the scan: same ctime, another owner
        (raw(uid=33), Verdict.CHANGED, "owner changed since the scan (uid 0 -> 33)"),
    ],
)
def test_recheck(now: tuple[Any, ...] | None, verdict: Verdict, fragment: str) -> None:
    kernel = Kernel(now)
    d = remove_one(STALE, kernel)
    assert d.verdict is verdict and fragment in d.reason and kernel.removed == []


def test_a_change_that_moves_no_liveness_fact_still_removes() -> None:
    class Chgrp(Kernel):  # chgrp without ctime: the record moved, no liveness fact did
        def __call__(self, kind: int, items: list[tuple[int, tuple[Any, ...]]]) -> list[Any]:
            self.now = raw(gid=5)
            return super().__call__(kind, items)

    kernel = Chgrp()
    d = remove_one(STALE, kernel)
    assert d.verdict is Verdict.REMOVED and kernel.removed == [(0, 7)]


@pytest.mark.parametrize(
    ("code", "verdict", "fragment"),
    [
        (errno.EPERM, Verdict.FAILED, "EPERM"),
        (errno.EINVAL, Verdict.CHANGED, "vanished"),
        (errno.EIDRM, Verdict.CHANGED, "vanished"),
        (errno.ENOMEM, Verdict.FAILED, "ENOMEM"),
    ],
)
def test_rmid_errno(code: int, verdict: Verdict, fragment: str) -> None:
    d = remove_one(STALE, Kernel(raw(), rmid_errno=code))
    assert d.verdict is verdict and fragment in d.reason


def test_recheck_refused() -> None:
    d = remove_one(STALE, Kernel(errno.EACCES))
    assert d.verdict is Verdict.FAILED and "EACCES" in d.reason


def test_only_stale_objects_are_touched_and_order_is_kept() -> None:
    kernel = Kernel(raw())
    kept = STALE._replace(verdict=Verdict.IN_USE)
    many = [STALE] * (remove.BATCH + 3)
    out = list(remove.remove_stale([kept, *many, kept], recheck=kernel))
    assert [d.verdict for d in out] == [
        Verdict.IN_USE,
        *[Verdict.REMOVED] * len(many),
        Verdict.IN_USE,
    ]
    assert kernel.removed == [(0, 7)] * len(many)


def test_a_change_of_semaphore_values_alone_keeps_the_set() -> None:
    from ipcjanitor.kernel.sysvipc import sem_object

    before = sem_object(2, (0x20, 0, 0, 0, 0, 0o600, 1, 100, 90, (5,), (0,), (0,), (1,)))
    after = sem_object(2, (0x20, 0, 0, 0, 0, 0o600, 1, 100, 90, (5,), (0,), (0,), (2,)))
    assert remove.what_changed(before, after) == (
        "its semaphore values changed since the scan: someone used it"
    )


QUEUE = Decision(
    msg_object(9, (0x30, 0, 0, 0, 0, 0o600, 0, 0, 100, 100, 90, 5, 5)), "q", Verdict.STALE, "dead"
)


@pytest.mark.parametrize(
    ("found", "verdict", "fragment"),
    [
        (QueueWaiters({}, None), Verdict.REMOVED, "dead"),
        (QueueWaiters({8: ("pid 4 is blocked in msgrcv on it",)}, None), Verdict.REMOVED, "dead"),
        (QueueWaiters({9: ("pid 4 is blocked in msgrcv on it",)}, None), Verdict.CHANGED, "pid 4"),
        (QueueWaiters({}, "cannot read pid 1"), Verdict.CHANGED, "cannot re-check its waiters"),
    ],
)
def test_a_queue_is_removed_only_if_no_task_began_waiting_on_it(
    found: QueueWaiters, verdict: Verdict, fragment: str
) -> None:
    kernel = Kernel(QUEUE.obj.raw)
    scans = []

    def waiters() -> QueueWaiters:
        scans.append(1)
        return found

    out = list(remove.remove_stale([QUEUE, QUEUE], waiters, kernel))
    assert [d.verdict for d in out] == [verdict, verdict] and fragment in out[0].reason
    assert scans == [1]  # one fresh look at the tasks, before the first queue
    assert (kernel.removed == [(2, 9), (2, 9)]) is (verdict is Verdict.REMOVED)

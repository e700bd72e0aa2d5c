"""The remover's re-check and errno mapping, with the kernel calls replaced."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from ipcjanitor.engine import remove
from ipcjanitor.kernel.procfs import Procfs
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


def test_the_waiters_are_read_from_the_callers_procfs(tmp_path: Path) -> None:
    """A captured tree's task blocked in msgrcv on the queue keeps it: the default re-read of
    the waiters reads the procfs the caller gave, not the live /proc."""
    root = tmp_path / "proc"
    (root / "40" / "task" / "41").mkdir(parents=True)
    msgrcv = {"x86_64": 70, "aarch64": 188}.get(os.uname().machine)
    if msgrcv is None:
        pytest.fail(f"no msgrcv number for {os.uname().machine} in this test")
    (root / "40" / "task" / "41" / "syscall").write_text(
        f"{msgrcv} 0x9 0x0 0x0 0x0 0x0 0x0 0x1 0x1\n"
    )
    kernel = Kernel(QUEUE.obj.raw)
    (out,) = remove.remove_stale([QUEUE], recheck=kernel, procfs=Procfs(root))
    assert (
        out.verdict is Verdict.CHANGED and "pid 40 (thread 41) is blocked in msgrcv" in out.reason
    )
    assert kernel.removed == []


def test_the_tasks_are_read_again_before_each_batch_of_queues() -> None:
    """A consumer that starts waiting during a long sweep (after the first batch) keeps its
    queue: it was removed when the tasks were read only once, before the first queue."""
    kernel = Kernel(QUEUE.obj.raw)
    late = QueueWaiters({9: ("pid 4 is blocked in msgrcv on it",)}, None)
    scans: list[QueueWaiters] = []

    def waiters() -> QueueWaiters:
        scans.append(QueueWaiters({}, None) if not scans else late)
        return scans[-1]

    ticks = iter(range(10**6))  # a clock on which each read of the tasks and each batch take 1
    queues = [QUEUE] * (remove.BATCH + 1)
    out = list(remove.remove_stale(queues, waiters, kernel, clock=lambda: next(ticks)))
    assert len(scans) == 2  # one look per batch, each just before its removals
    assert [d.verdict for d in out] == [Verdict.REMOVED] * remove.BATCH + [Verdict.CHANGED]
    assert "since the scan, pid 4 is blocked in msgrcv" in out[-1].reason
    assert len(kernel.removed) == remove.BATCH


def test_a_read_of_the_tasks_slower_than_the_removals_since_is_not_repeated_yet() -> None:
    """With a crowded process table a read of the tasks outlasts a batch: reading again before
    every batch would cost a read per 256 queues for no fresher look (the cost stays at most
    the removals' own; the window at most two reads and a batch)."""
    now = [0.0]
    scans = []

    def waiters() -> QueueWaiters:
        scans.append(now[0])
        now[0] += 10.0  # a read of the tasks takes 10
        return QueueWaiters({}, None)

    def kernel(kind: int, items: list[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        now[0] += 4.0  # a batch of removals takes 4
        return [None] * len(items)

    queues = [QUEUE] * (remove.BATCH * 6)
    out = list(remove.remove_stale(queues, waiters, kernel, clock=lambda: now[0]))
    assert [d.verdict for d in out] == [Verdict.REMOVED] * len(queues)
    # read at 0 (ends 10); batches end 14, 18, 22: again at 22 (12 >= 10, ends 32); 36, 40, 44
    assert scans == [0.0, 22.0]

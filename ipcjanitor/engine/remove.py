"""The only module that removes anything: re-check each stale object by id, then IPC_RMID.

One failure never stops the rest (like systemd's clean-ipc.c); each outcome is a Decision.
The kernel calls run in the C extension a batch at a time (re-read by id, compare with the
record judged stale, IPC_RMID only if equal: _sysvipc.recheck_rmid); what each outcome means
is decided here.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import groupby, islice
from pathlib import Path
from typing import Any

from .. import _sysvipc
from ..kernel.procfs import LIVE, Procfs, of
from ..kernel.sysvipc import VANISHED, build
from ..kernel.tasks import QueueWaiters, queue_waiters
from ..model import Decision, IpcKind, IpcObject, Verdict

_new = tuple.__new__
VANISHED_REASON = "vanished before removal (someone else removed it)"
# Objects re-checked and removed per call into the C extension: small enough that records of
# the first removals reach the journal at once (and a run killed half-way leaves them told).
BATCH = 256
Outcome = tuple[str, Any] | None  # None: removed; ("stat"|"rmid", errno); ("changed", raw)
Recheck = Callable[[int, list[tuple[int, tuple[Any, ...]]]], Sequence[Outcome]]


def what_changed(before: IpcObject, after: IpcObject) -> str | None:
    """Why the object re-read just before removal is not the one judged stale, or None."""
    if after.facts() == before.facts():
        return None
    if after.key != before.key or after.ctime != before.ctime:
        return (
            f"key/ctime changed since the scan (0x{before.key:08x}/{before.ctime} -> "
            f"0x{after.key:08x}/{after.ctime}): the id was reused"
        )
    if (after.uid, after.cuid) != (before.uid, before.cuid):  # IPC_SET within the same second
        return (
            f"its owner changed since the scan (uid {before.uid} -> {after.uid}): "
            "judged again by the next run"
        )
    for name in ("nattch", "ncnt", "zcnt", "qnum"):
        if getattr(after, name) != getattr(before, name):
            return (
                f"{name} changed since the scan ({getattr(before, name)} -> {getattr(after, name)})"
            )
    if after.pids != before.pids:
        return "its recorded pids changed since the scan: someone used it"
    if after.values != before.values:
        return "its semaphore values changed since the scan: someone used it"
    return "it was used since the scan"  # the facts differ: whatever moved, it is not the same


def _errno(code: int) -> str:
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def _meaning(d: Decision, outcome: Outcome, recheck: Recheck) -> Decision:
    """What one outcome of the batch means for the object."""

    def result(v: Verdict, reason: str) -> Decision:
        return Decision(d.obj, d.owner, v, reason)

    if outcome is None:  # the common case, built at C speed
        return _new(Decision, (d.obj, d.owner, Verdict.REMOVED, d.reason))
    what, detail = outcome
    if what in ("stat", "rmid") and detail in VANISHED:
        return result(Verdict.CHANGED, VANISHED_REASON)
    if what == "stat":
        return result(Verdict.FAILED, f"re-check refused: {_errno(detail)}; {d.reason}")
    if what == "rmid":
        return result(Verdict.FAILED, f"IPC_RMID refused: {_errno(detail)}; {d.reason}")
    change = what_changed(d.obj, build(d.obj.kind, d.obj.id, detail))
    if change:
        return result(Verdict.CHANGED, change)
    # the record moved, but no liveness fact did (a chgrp, say): judged on the new record
    (again,) = recheck(d.obj.kind.number, [(d.obj.id, detail)])
    return _meaning(d, again, recheck)


def _remove_batch(batch: list[Decision], recheck: Recheck) -> list[Decision]:
    if not batch:
        return []
    kind = batch[0].obj.kind.number
    outcomes = recheck(kind, [(d.obj.id, _raw(d.obj)) for d in batch])
    return [_meaning(d, o, recheck) for d, o in zip(batch, outcomes, strict=True)]


def _raw(obj: IpcObject) -> tuple[Any, ...]:
    if obj.raw is None:  # an object not read from the kernel can never be proven unchanged
        raise ValueError(f"{obj.kind.value} {obj.id}: no kernel record to re-check against")
    return obj.raw


def remove_stale(
    decisions: Iterable[Decision],
    waiters: Callable[[], QueueWaiters] | None = None,
    recheck: Recheck = _sysvipc.recheck_rmid,
    clock: Callable[[], float] = time.monotonic,
    *,
    procfs: Path | Procfs = LIVE,
) -> Iterator[Decision]:
    """Every decision back, in order, stale ones replaced by what removing them did.

    `waiters` re-reads the queue waiters; by default from `procfs`, the one the survey read.

    A queue shows no waiter in its own record, so the tasks are read again before each batch
    of stale queues (a task that began waiting on one since the scan, or during a long sweep,
    keeps it) — unless reading them took longer than the removals since: then the look is
    still as fresh as one read can make it. So a waiter can escape only by starting within
    the last read of the tasks, the removals since (no longer than that read) and one batch,
    and the reads add at most as much time as the removals (README, "How it decides").
    """
    if waiters is None:
        root = of(procfs).root
        waiters = lambda: queue_waiters(root)  # noqa: E731
    looked: tuple[float, float] | None = None  # the last read of the tasks: (ended, took)
    fresh = QueueWaiters({}, None)
    for stale, run in groupby(decisions, key=lambda d: d.verdict is Verdict.STALE):
        if not stale:
            yield from run
            continue
        for kind, same_kind in groupby(run, key=lambda d: d.obj.kind):
            todo: Iterator[Decision] = iter(same_kind)
            while batch := list(islice(todo, BATCH)):
                if kind is IpcKind.MSG:
                    if looked is None or clock() - looked[0] >= looked[1]:
                        start = clock()
                        fresh = waiters()
                        end = clock()
                        looked = (end, end - start)
                    batch = list(_without_new_waiters(batch, fresh))
                still = [d for d in batch if d.verdict is Verdict.STALE]
                done = iter(_remove_batch(still, recheck))
                yield from (next(done) if d.verdict is Verdict.STALE else d for d in batch)


def _without_new_waiters(queues: Iterable[Decision], fresh: QueueWaiters) -> Iterator[Decision]:
    for d in queues:
        waiting = fresh.waiters.get(d.obj.id)
        if waiting or fresh.blind:
            why = "; ".join(waiting or [f"cannot re-check its waiters: {fresh.blind}"])
            yield Decision(d.obj, d.owner, Verdict.CHANGED, f"since the scan, {why}")
        else:
            yield d

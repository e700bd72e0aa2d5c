"""The only module that removes anything: re-check each stale object by id, then IPC_RMID.

One failure never stops the rest (like systemd's clean-ipc.c); each outcome is a Decision.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _sysvipc
from .model import Decision, IpcKind, IpcObject, Verdict
from .procfs import VANISHED, build, stat_raw
from .tasks import QueueWaiters, queue_waiters

VANISHED_REASON = "vanished before removal (someone else removed it)"
RestatRaw = Callable[[IpcKind, int], tuple[Any, ...] | None]


def what_changed(before: IpcObject, after: IpcObject) -> str | None:
    """Why the object re-read just before removal is not the one judged stale, or None."""
    if after.facts() == before.facts():
        return None
    if after.key != before.key or after.ctime != before.ctime:
        return (
            f"key/ctime changed since the scan (0x{before.key:08x}/{before.ctime} -> "
            f"0x{after.key:08x}/{after.ctime}): the id was reused"
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


def remove_one(d: Decision, restat: RestatRaw = stat_raw) -> Decision:
    """Re-read one stale object by id and remove it only if nothing moved."""

    def outcome(v: Verdict, reason: str) -> Decision:
        return Decision(d.obj, d.owner, v, reason)

    obj = d.obj
    try:
        raw = restat(obj.kind, obj.id)
    except OSError as exc:
        return outcome(Verdict.FAILED, f"re-check refused: {_errno(exc)}; {d.reason}")
    if raw is None:
        return outcome(Verdict.CHANGED, VANISHED_REASON)
    if raw != obj.raw:  # the kernel's record moved: what moved decides
        change = what_changed(obj, build(obj.kind, obj.id, raw))
        if change:
            return outcome(Verdict.CHANGED, change)
    try:
        _sysvipc.rmid(d.obj.kind.number, d.obj.id)
    except OSError as exc:
        if exc.errno in VANISHED:
            return outcome(Verdict.CHANGED, VANISHED_REASON)
        return outcome(Verdict.FAILED, f"IPC_RMID refused: {_errno(exc)}; {d.reason}")
    return outcome(Verdict.REMOVED, d.reason)


def _errno(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def remove_stale(
    decisions: Iterable[Decision],
    restat: RestatRaw = stat_raw,
    waiters: Callable[[], QueueWaiters] = queue_waiters,
) -> Iterator[Decision]:
    """Every decision back, stale ones replaced by what removing them did.

    A queue shows no waiter in its own record, so before the first stale queue is removed the
    tasks are read again: a task that began waiting on it since the scan keeps it.
    """
    fresh: QueueWaiters | None = None
    for d in decisions:
        if d.verdict is not Verdict.STALE:
            yield d
            continue
        if d.obj.kind is IpcKind.MSG:
            if fresh is None:
                fresh = waiters()
            waiting = fresh.waiters.get(d.obj.id)
            if waiting or fresh.blind:
                why = (
                    "; ".join(waiting) if waiting else f"cannot re-check its waiters: {fresh.blind}"
                )
                yield Decision(d.obj, d.owner, Verdict.CHANGED, f"since the scan, {why}")
                continue
        yield remove_one(d, restat)

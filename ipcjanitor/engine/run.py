"""One run: read the tables, look at the process table once, decide, and (clean) remove."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from ..kernel.processes import gather
from ..kernel.procfs import LIVE, Procfs
from ..kernel.sysvipc import read_objects
from ..model import Decision, IpcKind, IpcObject, Pid, PosixDecision
from ..output.journal import RECORDED, Journal
from ..policy.model import Owner, Policy
from ..systemd.bus import clock_timer
from ..systemd.unitfiles import unit_aliases
from .decide import claims, decide, pids_to_probe, queues_to_probe, units_to_probe
from .lock import WAIT_LIMIT, acquire
from .remove import remove_stale

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .posix_run import PosixScope


class Scope(NamedTuple):
    """Which objects a run looks at."""

    kinds: frozenset[IpcKind] = frozenset(IpcKind)
    owners: frozenset[str] | None = None  # None: all objects, owned or not
    ids: frozenset[int] | None = None  # None: every id (scan --id)
    keys: frozenset[int] | None = None  # None: every key (scan --key)

    def admits(self, owner: Owner | None) -> bool:
        return self.owners is None or (owner is not None and owner.name in self.owners)

    def picks(self, obj: IpcObject) -> bool:
        return (self.ids is None or obj.id in self.ids) and (
            self.keys is None or obj.key in self.keys
        )


EVERYTHING = Scope()
PidNotes = Mapping[Pid, tuple[float | None, str]]  # a pid's start time and what it was
_NO_NOTES: PidNotes = MappingProxyType({})


def survey(
    policy: Policy,
    scope: Scope = EVERYTHING,
    procfs: Path | Procfs = LIVE,
    *,
    pid_notes: PidNotes = _NO_NOTES,
    own_unit: str | None = None,
    hook_pid: Pid | None = None,
) -> list[Decision]:
    """Every object in scope with its verdict and reason. Touches nothing.

    Facts go in as data: `pid_notes` label pids in the reasons (never a verdict); `own_unit`
    is the hook's unit, decided from the hook's own cgroup (kernel.cgroups), or from that of
    `hook_pid`, the launcher for which the hook server runs it (hook/serve.py).
    """
    objects = read_objects(procfs, scope.kinds)
    if scope.ids is not None or scope.keys is not None:
        objects = [o for o in objects if scope.picks(o)]
    claimed = [c for c in claims(objects, policy) if scope.admits(c[1])]
    units = units_to_probe(claimed)
    facts = gather(
        pids_to_probe(claimed),
        units,
        procfs,
        queues=queues_to_probe(claimed),
        pid_namespace_complete=policy.pid_namespace_complete,
        clock_timer=clock_timer,
        aliases=unit_aliases(units),
        own_unit=own_unit,
        hook_pid=hook_pid,
    )
    if pid_notes:
        facts = facts._replace(pid_notes={**facts.pid_notes, **pid_notes})
    decisions = decide(claimed, facts, policy, time.time())
    return sorted(decisions, key=_order)


def _order(d: Decision) -> tuple[int, int]:
    return (d.obj.kind.number, d.obj.id)


def clean(
    policy: Policy,
    scope: Scope,
    journal: Journal,
    *,
    pid_notes: PidNotes = _NO_NOTES,
    own_unit: str | None = None,
    hook_pid: Pid | None = None,
    lock_wait: float = WAIT_LIMIT,
    posix: tuple[PosixScope, list[PosixDecision], list[str]] | None = None,
    procfs: Path | Procfs = LIVE,
) -> tuple[list[Decision], str | None]:
    """Under the run lock: survey, remove what is stale, record each removal attempt.

    Returns every decision (stale ones replaced by what removing them did) and a note when
    this run had to wait for another. Raises LockBusy, having touched nothing, when another
    run held the lock for over lock_wait seconds. posix: (scope, out, notes): the POSIX
    objects of that scope are surveyed and cleaned under the same lock, their decisions
    appended to out. procfs: read by the survey and by the re-read of the queues' waiters.
    """
    held = acquire(limit=lock_wait)
    try:
        decisions = survey(
            policy, scope, procfs, pid_notes=pid_notes, own_unit=own_unit, hook_pid=hook_pid
        )
        done = []
        for d in remove_stale(decisions, procfs=procfs):
            if d.verdict in RECORDED:  # removals, failures, changes, doubts: one each
                journal.decision(d)
            done.append(d)
        if posix is not None:  # imported only then: System V runs never pay for it
            from .posix_run import clean_posix, survey_posix  # noqa: PLC0415

            pscope, pout, pnotes = posix
            found = survey_posix(policy, pscope)
            pnotes.extend(found.notes)
            for p in clean_posix(policy, found.decisions, pscope):
                if p.verdict in RECORDED:
                    journal.posix_decision(p)
                pout.append(p)
    finally:
        held.release()
        journal.close()
    return done, held.note()

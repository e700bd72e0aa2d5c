"""One run: read the tables, look at the process table once, decide, and (clean) remove."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..kernel.processes import gather
from ..kernel.sysvipc import read_objects
from ..model import Decision, HostFacts, IpcKind, PosixDecision, Verdict
from ..output.journal import Journal
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

    def admits(self, owner: Owner | None) -> bool:
        return self.owners is None or (owner is not None and owner.name in self.owners)


EVERYTHING = Scope()


def survey(
    policy: Policy,
    scope: Scope = EVERYTHING,
    procfs: Path = Path("/proc"),
    facts_hook: Callable[[HostFacts], HostFacts] | None = None,
) -> list[Decision]:
    """Every object in scope with its verdict and reason. Touches nothing."""
    claimed = [c for c in claims(read_objects(procfs, scope.kinds), policy) if scope.admits(c[1])]
    units = units_to_probe(claimed)
    facts = gather(
        pids_to_probe(claimed),
        units,
        procfs,
        queues=queues_to_probe(claimed),
        pid_namespace_complete=policy.pid_namespace_complete,
        clock_timer=clock_timer,
        aliases=unit_aliases(units),
    )
    if facts_hook is not None:
        facts = facts_hook(facts)
    decisions = decide(claimed, facts, policy, time.time())
    return sorted(decisions, key=_order)


def _order(d: Decision) -> tuple[int, int]:
    return (d.obj.kind.number, d.obj.id)


def clean(
    policy: Policy,
    scope: Scope,
    journal: Journal,
    facts_hook: Callable[[HostFacts], HostFacts] | None = None,
    *,
    lock_wait: float = WAIT_LIMIT,
    posix: tuple[PosixScope, list[PosixDecision], list[str]] | None = None,
) -> tuple[list[Decision], str | None]:
    """Under the run lock: survey, remove what is stale, record each removal attempt.

    Returns every decision (stale ones replaced by what removing them did) and a note when
    this run had to wait for another. Raises LockBusy, having touched nothing, when another
    run held the lock for over lock_wait seconds. posix: (scope, out, notes): the POSIX
    objects of that scope are surveyed and cleaned under the same lock, their decisions
    appended to out.
    """
    held = acquire(limit=lock_wait)
    try:
        decisions = survey(policy, scope, facts_hook=facts_hook)
        done = []
        for d in remove_stale(decisions):
            if d.verdict in _RECORDED:
                journal.decision(d)
            done.append(d)
        if posix is not None:  # imported only then: System V runs never pay for it
            from .posix_run import RECORDED, clean_posix, survey_posix  # noqa: PLC0415

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


_RECORDED = frozenset({Verdict.REMOVED, Verdict.FAILED, Verdict.CHANGED})

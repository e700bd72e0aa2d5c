"""One run's POSIX part: list, read the holders once, decide, and (clean) remove.

Zero cost for System V users: nothing is listed unless some owner claims a POSIX kind in
scope, and no process's maps or fds are read unless a claimed object exists.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from ..kernel.holders import read_holders
from ..kernel.posix import MQ_ROOT, SHM_ROOT, list_posix
from ..kernel.processes import gather
from ..kernel.procfs import LIVE, Procfs, of
from ..model import Pid, PosixDecision, PosixKind, PosixObject, Verdict
from ..policy.model import Policy
from ..systemd.unitfiles import unit_aliases
from .decide import PosixFacts, decide_posix_all, posix_units_to_probe
from .remove_posix import remove_posix


class PosixScope(NamedTuple):
    """Which POSIX objects a run looks at."""

    kinds: frozenset[PosixKind] = frozenset(PosixKind)
    owners: frozenset[str] | None = None  # None: all, owned or not
    shm_root: Path = SHM_ROOT
    mq_root: Path = MQ_ROOT
    procfs: Path | Procfs = LIVE  # LIVE: the running kernel's; a bare Path: a captured tree
    hook_pid: Pid | None = None  # the hook's launcher (hook/serve.py): no process of its unit


EVERY_POSIX = PosixScope()


class PosixSurvey(NamedTuple):
    decisions: list[PosixDecision]
    notes: list[str]  # what could not be listed, and why


def survey_posix(policy: Policy, scope: PosixScope = EVERY_POSIX) -> PosixSurvey:
    """Every POSIX object in scope with its verdict and reason. Touches nothing."""
    kinds = frozenset(k for k in scope.kinds if policy.claims_posix(k))
    if not kinds:
        return PosixSurvey([], [])
    listing = list_posix(kinds, of(scope.procfs).root, scope.shm_root, scope.mq_root)
    objects = list(listing.objects)
    if scope.owners is not None:  # only the objects those owners alone claim (the hook's)
        wanted = scope.owners
        objects = [o for o in objects if _sole_owner(policy, o) in wanted]
    claimed = [o for o in objects if _sole_owner(policy, o) is not None]
    facts = PosixFacts(holders={})
    if claimed:  # the one read of every process's maps and fds, for all of them at once
        found = read_holders(
            [o.identity for o in claimed],
            scope.procfs,
            pid_namespace_complete=policy.pid_namespace_complete,
        )
        units = posix_units_to_probe(claimed, policy)
        host = gather(
            {},
            units,
            scope.procfs,
            pid_namespace_complete=policy.pid_namespace_complete,
            aliases=unit_aliases(units),
            hook_pid=scope.hook_pid,
        )
        facts = PosixFacts(found.by_identity, found.blind, host.units, host.blind, host.unit_names)
    decisions = decide_posix_all(objects, facts, policy, time.time())
    return PosixSurvey(decisions, list(listing.notes))


def _sole_owner(policy: Policy, obj: PosixObject) -> str | None:
    owners = policy.name_owners(obj)
    return owners[0].name if len(owners) == 1 else None


def clean_posix(
    policy: Policy, decisions: Iterable[PosixDecision], scope: PosixScope = EVERY_POSIX
) -> list[PosixDecision]:
    """Stale ones removed (call under the run lock); every decision back, in order."""
    return list(
        remove_posix(
            decisions,
            shm_root=scope.shm_root,
            mq_root=scope.mq_root,
            procfs=scope.procfs,
            pid_namespace_complete=policy.pid_namespace_complete,
        )
    )


RECORDED = frozenset({Verdict.REMOVED, Verdict.FAILED, Verdict.CHANGED})

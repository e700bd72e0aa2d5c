"""`hook`: what ExecStopPost= runs after every stop of a hooked service, SIGKILL included.

systemd waits for it before each `Restart=`, so it is in every crashing service's restart
path (bench/restart.py, bench/README.md). It is reached without argparse (entry.py,
hookgate.py). It runs inside the unit's own cgroup and decides from it (rule 2,
kernel.cgroups): while ExecStopPost= runs, that cgroup holds the hook itself and whatever the
service left alive (KillMode=process), so nothing but the hook's own pid is excluded. It asks
systemd nothing of the unit: what D-Bus would add (main pid, start time) is detail no verdict
needs, and asking it cost the restart path a process and pystemd's import (bench/README.md,
issue 20). As for `clean`, the clock recorder's timer is asked only when a recorded pid now
belongs to a younger process.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from ..engine.run import Scope
    from ..model import PosixDecision
    from ..output.journal import Journal
    from ..output.metrics import Outcome
    from ..policy.model import Owner, Policy
    from .gate import HookCall


def run_hook(call: HookCall, hook_pid: int | None = None) -> int:
    """Clean the owners bound to call.unit; errors become exit codes (errors.guarded).

    hook_pid: the launcher in the unit's cgroup for which the hook server runs this hook
    (hook/serve.py); None: this process is the hook, in that cgroup itself.

    The umask is set first: the service's UMask= reaches ExecStopPost=, and every file the
    hook creates (lock, metrics) must get the mode its code asks for.
    ipcjanitor-hook sets the same umask before the interpreter starts (bytecode caches).
    """
    os.umask(0o022)
    from ..errors import guarded  # noqa: PLC0415

    if call.metrics:  # FILE checked first, then written however the run ends
        from ..output import metrics  # noqa: PLC0415

        run, path = metrics.Run("hook", call.unit), call.metrics
        return guarded(
            lambda: metrics.recording(path, run, lambda out: _run(call, out, hook_pid)),
            removes=True,
        )
    return guarded(lambda: _run(call, None, hook_pid), removes=True)


def _run(call: HookCall, out: Outcome | None, hook_pid: int | None) -> int:
    from ..errors import ExitCode  # noqa: PLC0415
    from .gate import no_owner_message  # noqa: PLC0415

    unit = call.unit
    from ..systemd.unitfiles import read_aliases  # noqa: PLC0415

    policy = _policy(unit, call.policy)
    owners = policy.owners_for_unit(unit, read_aliases())  # by an alias of it too
    if owners:
        return _clean_owners_of(unit, owners, policy, call, out=out, hook_pid=hook_pid)
    if call.json:
        from ..output import report  # noqa: PLC0415

        note = no_owner_message(unit)
        report.emit([], as_json=True, quiet=call.quiet, notes=[note], extra={"unit": unit})
    elif not call.quiet:
        print(no_owner_message(unit))
    return ExitCode.OK


def _policy(unit: str, explicit: str | None) -> Policy:
    from ..errors import PolicyErrors  # noqa: PLC0415
    from ..policy.load import load_policy  # noqa: PLC0415

    try:
        return load_policy(explicit, from_env=False)  # not the service's Environment=
    except PolicyErrors as exc:
        from ..output.journal import Journal, stream_is_journal  # noqa: PLC0415

        told = Journal.for_hook(unit).policy_error(
            f"policy error, nothing was removed after {unit} stopped: {exc}", echo=True
        )
        exc.journaled = told and stream_is_journal(2)  # stderr would say it a second time
        raise


def _clean_owners_of(
    unit: str,
    owners: tuple[Owner, ...],
    policy: Policy,
    call: HookCall,
    *,
    out: Outcome | None,
    hook_pid: int | None,
) -> int:
    from ..engine.lock import HOOK_WAIT_LIMIT, LockBusy  # noqa: PLC0415
    from ..engine.run import Scope, clean  # noqa: PLC0415
    from ..errors import ExitCode  # noqa: PLC0415
    from ..output import report  # noqa: PLC0415
    from ..output.journal import Journal  # noqa: PLC0415

    if out is not None:
        out.owners = [o.name for o in owners]
    journal = Journal.for_hook(unit)
    notes = stop_notes(unit, served=hook_pid is not None)
    scope = Scope(owners=frozenset(o.name for o in owners))
    # the unit's POSIX objects too, under the same lock (listed only if its owners claim any)
    posix: list[PosixDecision] = []
    posix_part = None
    if any(o.posix_kinds for o in owners):  # else nothing POSIX is imported, listed or read
        from ..engine.posix_run import PosixScope  # noqa: PLC0415

        posix_part = (PosixScope(owners=scope.owners, hook_pid=hook_pid), posix, notes)
    try:
        done, waited = clean(
            policy, scope, journal, own_unit=unit, hook_pid=hook_pid,
            lock_wait=HOOK_WAIT_LIMIT, posix=posix_part,
        )  # fmt: skip
    except LockBusy as busy:  # give up inside TimeoutStopSec=: a stop never fails for it
        if out is not None:
            out.gave_up = True  # exit 0, but no success: the metrics say it gave up
        return _gave_up(unit, busy, call, scope=scope, journal=journal, notes=notes)
    if out is not None:
        out.record(done, posix)
    if waited:
        notes.append(waited)
    from ..output.journal import stream_is_journal  # noqa: PLC0415

    # its stdout is the journal: the records told each row already, the summary says the rest
    view = report.View(rows=not (journal.to_journal and stream_is_journal(1)))
    report.emit(
        done, as_json=call.json, quiet=call.quiet, notes=notes, extra={"unit": unit},
        posix=posix, view=view,
    )  # fmt: skip
    return ExitCode.FAILED if report.failed([*done, *posix]) else ExitCode.OK


def stop_notes(unit: str, env: dict[str, str] | None = None, *, served: bool = False) -> list[str]:
    """How the unit stopped, as its environment reports it (SERVICE_RESULT, EXIT_CODE,
    EXIT_STATUS: systemd's, unless the service's Environment= overrides them, so labelled as
    the service's and never part of a reason), and what the verdicts rest on."""
    from ..systemd.bus import StopInfo  # noqa: PLC0415  (pystemd is not imported by it)

    stop = StopInfo.from_env(env)
    return [
        f"{unit} stopped: {stop.describe()}",
        f"deciding from {unit}'s own cgroup ("
        + ("the hook server reads its launcher's" if served else "the hook runs in it")
        + ") and the policy; "
        "systemd is not asked",
    ]


def _gave_up(
    unit: str, busy: Exception, call: HookCall, *, scope: Scope, journal: Journal, notes: list[str]
) -> int:
    """The lock stayed busy past the hook's wait: a warning record, nothing removed, exit 0."""
    from ..errors import ExitCode  # noqa: PLC0415
    from ..output import report  # noqa: PLC0415

    why = (
        f"gave up after {unit} stopped, nothing was removed: {busy}; the next run "
        "(the timer's, or the next stop's hook) judges these objects"
    )
    from ..output.journal import MESSAGE_ID_GAVE_UP  # noqa: PLC0415

    journal.send(
        why,
        "warning",
        [("MESSAGE_ID", MESSAGE_ID_GAVE_UP), ("IPCJANITOR_UNIT", unit),
         ("IPCJANITOR_OWNER", " ".join(sorted(scope.owners or ())))],
    )  # fmt: skip
    journal.close()
    if call.json:  # a document still, for whoever reads one; the record said it already
        report.emit([], as_json=True, quiet=call.quiet, notes=[*notes, why], extra={"unit": unit})
    return ExitCode.OK

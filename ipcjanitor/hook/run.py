"""`hook`: what ExecStopPost= runs after every stop of a hooked service, SIGKILL included.

systemd waits for it before each `Restart=`, so it is in every crashing service's restart
path (bench/restart.py, bench/README.md). It is reached without argparse (entry.py,
hookgate.py); it imports what both of its processes need, starts asking systemd in a child
process, and only then imports the rest: the TOML parser, the policy, the engine.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..engine.run import Scope
    from ..model import HostFacts, PosixDecision
    from ..output.journal import Journal
    from ..output.metrics import Outcome
    from ..policy.model import Owner, Policy
    from ..systemd.bus import UnitRun
    from .gate import HookCall


def run_hook(call: HookCall) -> int:
    """Clean the owners bound to call.unit; errors become exit codes (errors.guarded).

    The umask is set first: the service's UMask= reaches ExecStopPost=, and every file the
    hook creates (lock, metrics) must get the mode its code asks for.
    ipcjanitor-hook sets the same umask before the interpreter starts (bytecode caches).
    """
    os.umask(0o022)
    # What both processes need (typing, enum, re: ~6 ms) is imported once, before the fork;
    # then the child's pystemd and D-Bus overlap with the policy and the engine (bench/).
    from ..errors import guarded  # noqa: PLC0415
    from ..systemd import bus as systemd  # noqa: PLC0415, F401

    asking = Asking(call.unit)
    try:
        if call.metrics:  # FILE checked first, then written however the run ends
            from ..output import metrics  # noqa: PLC0415

            run, path = metrics.Run("hook", call.unit), call.metrics
            return guarded(
                lambda: metrics.recording(path, run, lambda out: _run(call, asking, out)),
                removes=True,
            )
        return guarded(lambda: _run(call, asking, None), removes=True)
    finally:
        asking.cancel()  # unless it answered: no owner, a policy error, anything raised


def _run(call: HookCall, asking: Asking, out: Outcome | None) -> int:
    from ..errors import ExitCode  # noqa: PLC0415
    from .gate import no_owner_message  # noqa: PLC0415

    unit = call.unit
    from ..systemd.unitfiles import read_aliases  # noqa: PLC0415

    policy = _policy(unit, call.policy)
    owners = policy.owners_for_unit(unit, read_aliases())  # by an alias of it too
    if owners:
        return _clean_owners_of(unit, owners, policy, call, asking, out=out)
    asking.cancel()
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
    asking: Asking,
    *,
    out: Outcome | None,
) -> int:
    from ..engine.lock import HOOK_WAIT_LIMIT, LockBusy  # noqa: PLC0415
    from ..engine.run import Scope, clean  # noqa: PLC0415
    from ..errors import ExitCode  # noqa: PLC0415
    from ..output import report  # noqa: PLC0415
    from ..output.journal import Journal  # noqa: PLC0415

    if out is not None:
        out.owners = [o.name for o in owners]
    journal = Journal.for_hook(unit)
    notes, facts_hook = _stop_facts(unit, asking)
    scope = Scope(owners=frozenset(o.name for o in owners))
    # the unit's POSIX objects too, under the same lock (listed only if its owners claim any)
    posix: list[PosixDecision] = []
    posix_part = None
    if any(o.posix_kinds for o in owners):  # else nothing POSIX is imported, listed or read
        from ..engine.posix_run import PosixScope  # noqa: PLC0415

        posix_part = (PosixScope(owners=scope.owners), posix, notes)
    try:
        done, waited = clean(
            policy, scope, journal, facts_hook, lock_wait=HOOK_WAIT_LIMIT, posix=posix_part
        )
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


def _stop_facts(
    unit: str, asking: Asking
) -> tuple[list[str], Callable[[HostFacts], HostFacts] | None]:
    """The notes on how the unit stopped, and the facts hook naming its main pid (or None):
    from systemd, else what the environment says, labelled as the service's."""
    from ..systemd.bus import StopInfo  # noqa: PLC0415

    run, no_bus = asking.answer()
    stop = StopInfo.from_run(run) if run is not None else StopInfo.from_env()
    notes = [f"{unit} stopped: {stop.describe()}"]
    if run is None:
        notes.append(f"deciding from the policy and /proc alone: {no_bus}")
        return notes, None
    how = stop.how()
    notes.append(
        f"systemd: main pid {run.main_pid}, {len(run.remaining)} process(es) in "
        f"{run.control_group or 'its cgroup'}"
    )

    def add_main_pid(facts: HostFacts) -> HostFacts:
        if not run.main_pid:
            return facts
        text = f"was {unit}'s main process" + (f", {how}" if how else ", now gone")
        notes_by_pid = {**facts.pid_notes, run.main_pid: (run.main_start, text)}
        return facts._replace(pid_notes=notes_by_pid)

    return notes, add_main_pid


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


HOOK_BUS_DEADLINE = 3.0  # seconds the hook waits for systemd's answer, from its fork on


class Asking:
    """systemd.unit_run(unit), asked by a child process while this one goes on.

    In the restart path, importing pystemd and the D-Bus round trips (~11 ms) overlap with
    parsing the policy and importing the engine (systemd.bus.Question: the child, the pipe,
    the deadline). answer() returns what unit_run would have returned, and raises what it
    would have raised (a bug, not a D-Bus failure); a child that ends without an answer, or
    has none within HOOK_BUS_DEADLINE (a stalled dbus-daemon), is no answer: the hook then
    decides from the policy and /proc alone, and says why. No verdict waits on it longer.
    """

    def __init__(self, unit: str) -> None:
        from ..systemd import bus  # noqa: PLC0415  (imported before the fork: run_hook)

        self.unit = unit
        self._question = bus.Question(lambda: bus.unit_run_here(unit))

    @property
    def _pid(self) -> int | None:
        return self._question._pid

    def answer(self) -> tuple[UnitRun | None, str | None]:
        """What systemd.unit_run(unit) returns (or raises), within HOOK_BUS_DEADLINE."""
        return self._question.answer(HOOK_BUS_DEADLINE)

    def cancel(self) -> None:
        """Not needed (or no longer): end the child, ours by its pid, and reap it."""
        self._question.cancel()

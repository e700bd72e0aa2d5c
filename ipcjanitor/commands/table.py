"""The body of each subcommand: load policy, survey, act, print. Returns the exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..engine import run as janitor
from ..engine.run import Scope, survey
from ..errors import ExitCode, PolicyErrors, UsageError
from ..kernel.sysvipc import read_objects
from ..model import Decision, IpcKind, PosixDecision, PosixKind, Verdict
from ..output import metrics, report
from ..output.journal import MESSAGE_ID_HANDOFF_GAP, Journal, stream_is_journal
from ..policy.load import load_policy
from ..policy.model import Policy, alias_notes, describe, handoff_warnings, unitless_warnings
from ..systemd.unitfiles import unit_aliases

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..engine.posix_run import PosixScope


def cmd_hook(args: argparse.Namespace) -> int:
    from ..hook.gate import HookCall  # noqa: PLC0415
    from ..hook.run import run_hook  # noqa: PLC0415

    return run_hook(HookCall(args.unit, args.policy, args.json, args.metrics, args.quiet))


def cmd_install_hook(args: argparse.Namespace) -> int:
    from ..hook.install import install_hook  # noqa: PLC0415

    return install_hook(
        args.unit, runtime=args.runtime, remove=args.remove, policy=args.policy,
        metrics=args.metrics, no_metrics=args.no_metrics,
    )  # fmt: skip


def cmd_learn(args: argparse.Namespace) -> int:
    from ..learn.command import Request, learn  # noqa: PLC0415

    return learn(Request(args.unit, args.for_, args.owner, args.write, args.policy, args.quiet))


def _policy(args: argparse.Namespace, handoff_journaled: bool = False) -> Policy:
    """The policy, its warnings on stderr (-v: all of them). handoff_journaled: the run's
    handoff-gap records go to the journal, which stderr is: -v does not repeat them."""
    policy = load_policy(args.policy)
    for warning in policy.warnings:
        print(f"ipcjanitor: warning: {warning}", file=sys.stderr)
    if args.verbose:
        print(f"ipcjanitor: policy from {', '.join(policy.sources)}", file=sys.stderr)
        handoff = [] if handoff_journaled else handoff_warnings(policy)
        for warning in [*unitless_warnings(policy), *handoff]:
            print(f"ipcjanitor: warning: {warning}", file=sys.stderr)
        for note in alias_notes(policy, unit_aliases([o.unit for o in policy.owners if o.unit])):
            print(f"ipcjanitor: note: {note}", file=sys.stderr)
    return policy


def _scope(args: argparse.Namespace, policy: Policy) -> Scope:
    owners = None
    if args.owner:
        unknown = [n for n in args.owner if policy.owner(n) is None]
        if unknown:
            names = ", ".join(o.name for o in policy.owners) or "none"
            raise UsageError(f"no owner named {', '.join(unknown)} in the policy (owners: {names})")
        # a template owner's name takes its instances' owners too (workers: workers@2, ...)
        owners = frozenset(args.owner) | {o.name for o in policy.owners if o.template in args.owner}
    sysv = {k.value for k in IpcKind}
    kinds = (
        frozenset(IpcKind(k) for k in args.kind if k in sysv) if args.kind else frozenset(IpcKind)
    )
    ids = frozenset(args.id) if getattr(args, "id", None) else None
    keys = frozenset(args.key) if getattr(args, "key", None) else None
    return Scope(kinds=kinds, owners=owners, ids=ids, keys=keys)


def _posix_scope(args: argparse.Namespace, policy: Policy, scope: Scope) -> PosixScope | None:
    """The POSIX part of the run, or None when no owner claims a POSIX kind asked for."""
    sysv = {k.value for k in IpcKind}
    kinds = (
        frozenset(PosixKind(k) for k in args.kind if k not in sysv)
        if args.kind
        else frozenset(PosixKind)
    )
    if scope.ids is not None or scope.keys is not None:
        return None  # --id and --key name System V objects: POSIX ones have neither
    if not any(policy.claims_posix(k) for k in kinds):
        return None  # nothing POSIX imported, listed or read: System V runs pay nothing
    from ..engine.posix_run import PosixScope  # noqa: PLC0415

    return PosixScope(kinds=kinds, owners=scope.owners)


def _survey_posix(
    policy: Policy, pscope: PosixScope | None
) -> tuple[list[str], list[PosixDecision]]:
    if pscope is None:
        return [], []
    from ..engine.posix_run import survey_posix  # noqa: PLC0415

    found = survey_posix(policy, pscope)
    return found.notes, found.decisions


def _view(args: argparse.Namespace) -> report.View:
    """lsipc's and systemctl's options as a View; -o checked before any work."""
    from ..output.terminal import style  # noqa: PLC0415

    view = report.View(
        output=getattr(args, "output", None),
        style=style(args),
        legend=not getattr(args, "no_legend", False),
    )
    try:
        report.sysv_columns(view.output)
    except ValueError as exc:
        raise UsageError(f"-o/--output: {exc}") from None
    return view


def _print(
    args: argparse.Namespace,
    decisions: Sequence[Decision],
    notes: Sequence[str] = (),
    posix: Sequence[PosixDecision] = (),
    view: report.View | None = None,
) -> None:
    from ..output.terminal import paged  # noqa: PLC0415

    with paged(args):
        report.emit(
            decisions, as_json=args.json, quiet=args.quiet, notes=notes, posix=posix,
            view=view or _view(args),
        )  # fmt: skip


def cmd_scan(args: argparse.Namespace) -> int:
    view = _view(args)
    policy = _policy(args)
    scope = _scope(args, policy)
    decisions = survey(policy, scope)
    notes, posix = _survey_posix(policy, _posix_scope(args, policy, scope))
    _print(args, decisions, notes, posix, view)
    if args.verbose:
        from .hints import unclaimed_mappings  # noqa: PLC0415

        for hint in unclaimed_mappings(policy, decisions):
            print(f"ipcjanitor: hint: {hint}", file=sys.stderr)
        if line := _pid_namespace_line(policy, [*decisions, *posix]):
            print(f"ipcjanitor: {line}", file=sys.stderr)
    return ExitCode.OK


def _pid_namespace_line(
    policy: Policy, decisions: Sequence[Decision | PosixDecision]
) -> str | None:
    """doctor's and scan -v's line on objects unknown only for our pid namespace (issue 20)."""
    from ..kernel.processes import in_host_pid_namespace  # noqa: PLC0415
    from .pidns import container_manager, pid_namespace_line  # noqa: PLC0415

    outside = not policy.pid_namespace_complete and not in_host_pid_namespace()
    pairs = [(d.verdict, d.reason) for d in decisions]
    if pid_namespace_line(pairs, outside, None) is None:  # asked of systemd only when needed
        return None
    return pid_namespace_line(pairs, outside, container_manager())


def cmd_clean(args: argparse.Namespace) -> int:
    if args.metrics and not args.dry_run:  # FILE checked first, written however the run ends
        run = metrics.Run("clean", metrics.own_unit())
        loaded: list[Policy] = []  # the policy, once it loaded: for the owners without a hook
        return metrics.recording(
            args.metrics, run, lambda out: _clean(args, out, loaded), lambda out: _health(loaded)
        )
    return _clean(args, None, [])


def _clean(args: argparse.Namespace, out: metrics.Outcome | None, loaded: list[Policy]) -> int:
    view = _view(args)
    # the table tells each removal once: text records on stderr only when it is not printed
    journal = Journal.for_clean(echo=args.quiet and not args.json)
    policy = _journaled_policy(args, journal)
    scope = _scope(args, policy)
    pscope = _posix_scope(args, policy, scope)
    if args.dry_run:
        decisions = survey(policy, scope)
        notes, posix = _survey_posix(policy, pscope)
        _print(args, decisions, notes, posix, view)
        return ExitCode.OK
    loaded.append(policy)
    if out is not None:
        out.owners = [o.name for o in policy.owners if scope.admits(o)]
    pdone: list[PosixDecision] = []
    pnotes: list[str] = []
    posix_part = (pscope, pdone, pnotes) if pscope is not None else None
    if journal.to_journal:  # with -v too: a stderr line has no MESSAGE_ID (issue 22.1)
        for warning in handoff_warnings(policy):  # one record per run, beside the removals
            journal.send(warning, "warning", [("MESSAGE_ID", MESSAGE_ID_HANDOFF_GAP),
                                              ("IPCJANITOR_EVENT", "handoff-gap")])  # fmt: skip
    done, waited = janitor.clean(policy, scope, journal, posix=posix_part)
    if out is not None:
        out.record(done, pdone)
    # under systemd stdout is the journal too: the records told each row already
    view = view._replace(rows=not (journal.to_journal and stream_is_journal(1)))
    _print(args, done, [*pnotes, *([waited] if waited else [])], pdone, view)
    return ExitCode.FAILED if report.failed([*done, *pdone]) else ExitCode.OK


def _health(loaded: list[Policy]) -> list[metrics.Family]:
    """What doctor knows, for the timer's metrics: the tables against their limits (the
    policy not needed), stuck pipes, and the owners without a hook (if the policy loaded)."""
    from . import doctor, doctor_posix, limits  # noqa: PLC0415

    rows = limits.limit_rows(read_objects(), limits.read_limits(), None)
    rows += doctor_posix.posix_rows(None)[0]
    stuck = sum(1 for p in doctor.find_stuck_pipes().found if p.problem)
    hooks = doctor.missing_hooks(loaded[0]) if loaded else None
    return metrics.health_families(rows, stuck, hooks)


def _journaled_policy(args: argparse.Namespace, journal: Journal) -> Policy:
    """The policy; an error in it is also a journal record at priority err (MESSAGE_ID
    policy-error), and stderr does not repeat it there when stderr is the journal."""
    try:  # a dry run sends no handoff record: -v says it on stderr
        return _policy(args, journal.to_journal and not args.dry_run and stream_is_journal(2))
    except PolicyErrors as exc:
        if journal.policy_error(f"policy error, nothing was removed: {exc}"):
            exc.journaled = stream_is_journal(2)
        raise


def cmd_policy(args: argparse.Namespace) -> int:
    if args.policy_command in ("owners", "units"):
        policy = load_policy(args.policy)
        names = [o.name if args.policy_command == "owners" else o.unit for o in policy.owners]
        print("\n".join(sorted({n for n in names if n})))
        return ExitCode.OK
    if args.policy_command != "check":
        raise UsageError("usage: ipcjanitor policy {check [PATH],owners,units}")
    policy = load_policy(args.path or args.policy)
    for warning in [*policy.warnings, *unitless_warnings(policy), *handoff_warnings(policy)]:
        print(f"warning: {warning}")
    for note in alias_notes(policy, unit_aliases([o.unit for o in policy.owners if o.unit])):
        print(f"note: {note}")
    for line in describe(policy):
        print(line)
    print("policy OK")
    return ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..engine.posix_run import survey_posix  # noqa: PLC0415
    from . import doctor  # noqa: PLC0415

    notes: list[str] = []
    try:
        policy = load_policy(args.policy)
        decisions = survey(policy)  # every object, so the tables are read once
        posix = survey_posix(policy).decisions  # nothing read unless an owner claims names
        seen = doctor.Seen(
            [d.obj for d in decisions],
            [d.obj for d in decisions if d.verdict is Verdict.STALE],
            {(d.obj.kind, d.obj.id): d.verdict.value for d in decisions},
            policy,
            [d.obj for d in posix if d.verdict is Verdict.STALE],
        )
        if line := _pid_namespace_line(policy, [*decisions, *posix]):
            notes.append(line)
    except PolicyErrors as exc:
        seen = doctor.Seen(read_objects())
        notes.append(f"policy error, stale counts unknown: {exc}")
    result = doctor.run_checks(seen, notes)
    from ..output.terminal import paged, style  # noqa: PLC0415

    with paged(args):
        print(result.json() if args.json else result.text(style(args)))
    return ExitCode.OK if result.healthy else ExitCode.FAILED

"""`hook`: what ExecStopPost= runs after every stop of a hooked service, SIGKILL included.

systemd waits for it before each `Restart=`, so it is in every crashing service's restart
path (bench/restart.py). It is reached without argparse (entry.py, hookgate.py), and imports
what it needs only once it knows it needs it.
"""

from __future__ import annotations

import time

from .errors import ExitCode, PolicyErrors
from .hookgate import HookCall, no_owner_message
from .policy_load import load_policy

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from .model import HostFacts
    from .policy import Owner, Policy


def run_hook(call: HookCall) -> int:
    """Clean the owners bound to call.unit; a policy error is also logged to the journal."""
    unit = call.unit
    policy = _policy(unit, call.policy)
    owners = policy.owners_for_unit(unit)
    if owners:
        return _clean_owners_of(unit, owners, policy, call)
    if call.json:
        from . import report  # noqa: PLC0415

        note = no_owner_message(unit)
        report.emit([], as_json=True, quiet=call.quiet, notes=[note], extra={"unit": unit})
    elif not call.quiet:
        print(no_owner_message(unit))
    return ExitCode.OK


def _policy(unit: str, explicit: str | None) -> Policy:
    try:
        return load_policy(explicit, from_env=False)  # not the service's Environment=
    except PolicyErrors as exc:
        from .journal import Journal  # noqa: PLC0415

        Journal(unit=unit).send(
            f"policy error, nothing was removed after {unit} stopped: {exc}", "err"
        )
        raise


def _clean_owners_of(unit: str, owners: tuple[Owner, ...], policy: Policy, call: HookCall) -> int:
    from . import report  # noqa: PLC0415
    from .janitor import Scope, clean  # noqa: PLC0415
    from .journal import Journal  # noqa: PLC0415
    from .systemd import StopInfo, unit_run  # noqa: PLC0415

    if call.metrics:
        from . import metrics  # noqa: PLC0415

        metrics.require()

    journal = Journal(unit=unit)
    stop = StopInfo.from_env()
    run, no_bus = unit_run(unit)
    notes = [f"{unit} stopped: {stop.describe()}"]
    if run is not None:
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

        facts_hook = add_main_pid
    else:
        notes.append(f"deciding from the policy and /proc alone: {no_bus}")
        facts_hook = None
    scope = Scope(owners=frozenset(o.name for o in owners))
    started = time.time()
    done, waited = clean(policy, scope, journal, facts_hook)
    if call.metrics:
        metrics.write(call.metrics, done, started, time.time())
    if waited:
        notes.append(waited)
    report.emit(done, as_json=call.json, quiet=call.quiet, notes=notes, extra={"unit": unit})
    return ExitCode.FAILED if report.failed(done) else ExitCode.OK

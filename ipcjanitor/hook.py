"""`hook` (run by ExecStopPost= after every stop) and `install-hook` (writes that drop-in)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import NotPermittedError, PolicyError, PolicyErrors, UsageError
from .policy import Owner, Policy, format_duration, load_policy

DROPIN_NAME = "ipcjanitor.conf"


def cmd_hook(args: argparse.Namespace) -> int:
    """After every stop of a service: it runs in its stop path, so the no-owner case is cheap."""
    unit: str = args.unit
    try:
        policy = load_policy(args.policy)
    except (PolicyErrors, PolicyError) as exc:
        from .journal import Journal  # noqa: PLC0415

        Journal(unit=unit).send(
            f"policy error, nothing was removed after {unit} stopped: {exc}", "err"
        )
        raise
    owners = policy.owners_for_unit(unit)
    if not owners:  # the quick path: nothing more to import, no D-Bus round trip
        print(f"no policy owner is bound to {unit}: nothing to do")
        return 0
    return _clean_owners_of(unit, owners, policy, args)


def _clean_owners_of(
    unit: str, owners: tuple[Owner, ...], policy: Policy, args: argparse.Namespace
) -> int:
    # Imported here, not at the top: the hook's no-owner path must start fast (bench/).
    from . import metrics, report  # noqa: PLC0415
    from .janitor import Scope, clean  # noqa: PLC0415
    from .journal import Journal  # noqa: PLC0415
    from .model import HostFacts  # noqa: PLC0415
    from .systemd import StopInfo, unit_run  # noqa: PLC0415

    if args.metrics:
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
    if args.metrics:
        metrics.write(args.metrics, done, started, time.time())
    if waited:
        notes.append(waited)
    report.emit(done, as_json=args.json, quiet=args.quiet, notes=notes, extra={"unit": unit})
    return 1 if report.failed(done) else 0


def hook_command(policy: str | None) -> str:
    """The command line that runs this very ipcjanitor as a hook."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "ipcjanitor" and os.path.isabs(argv0):
        exe = argv0
    elif os.path.basename(argv0) == "ipcjanitor":
        exe = os.path.abspath(argv0)
    else:  # python -m ipcjanitor
        exe = f"{sys.executable} -m ipcjanitor"
    pol = f" --policy={os.path.abspath(policy)}" if policy else ""
    return f"{exe}{pol} hook --unit=%n"


def dropin_text(command: str) -> str:
    return (
        "# Written by `ipcjanitor install-hook`; remove with `ipcjanitor install-hook --remove`.\n"
        "# After every stop of this service (SIGKILL included), remove the System V IPC objects\n"
        "# its ipcjanitor policy owner left that are provably unused.\n"
        "# '+': full privileges even with User=; '-': a janitor failure never fails the service.\n"
        "[Service]\n"
        f"ExecStopPost=-+{command}\n"
    )


def cmd_install_hook(args: argparse.Namespace) -> int:
    unit: str = args.unit
    if not unit.endswith(".service") or "/" in unit:
        raise UsageError(f"{unit!r} is not a service: ExecStopPost= hooks go on .service units")
    base = Path("/run/systemd/system" if args.runtime else "/etc/systemd/system")
    path = base / f"{unit}.d" / DROPIN_NAME
    if args.remove:
        if not path.exists():
            print(f"{path} does not exist: nothing to remove")
            return 0
        with _as_root(path):
            path.unlink()
        with_reload = _reload()
        print(f"removed {path}{with_reload}")
        return 0
    policy_path = args.policy or os.environ.get("IPCJANITOR_POLICY") or None
    policy = load_policy(policy_path)
    owners = policy.owners_for_unit(unit)
    if not owners:
        raise PolicyError(
            None, None, f"no policy owner is bound to {unit}: add unit = \"{unit}\" to the "
            "owner's table (e.g. in /etc/ipcjanitor/policy.d/NAME.toml), check it with "
            "`ipcjanitor policy check`, then run install-hook again",
        )  # fmt: skip
    for o in owners:
        if policy.grace(o):
            print(
                f"warning: owner {o.name} has min_age {format_duration(policy.grace(o))}: the "
                "hook keeps objects used that recently; set min_age = \"0s\" on the owner to "
                "clean right after a kill", file=sys.stderr,
            )  # fmt: skip
    text = dropin_text(hook_command(policy_path))
    if path.exists() and path.read_text() == text:
        print(f"{path} is already installed: nothing changed")
        return 0
    with _as_root(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {path}{_reload()}")
    return 0


@contextmanager
def _as_root(what: Path) -> Iterator[None]:
    try:
        yield
    except PermissionError as exc:
        raise NotPermittedError(f"{what}: {exc.strerror}; run install-hook as root") from None


def _reload() -> str:
    from .systemd import daemon_reload  # noqa: PLC0415

    why = daemon_reload()
    if why is None:
        return "; systemd reloaded"
    print(
        f"warning: could not reload systemd: {why}; run `systemctl daemon-reload`", file=sys.stderr
    )
    return ""

"""`hook`: what ExecStopPost= runs after every stop of a hooked service, SIGKILL included.

systemd waits for it before each `Restart=`, so it is in every crashing service's restart
path (bench/restart.py, bench/README.md). It is reached without argparse (entry.py,
hookgate.py); it imports what both of its processes need, starts asking systemd in a child
process, and only then imports the rest: the TOML parser, the policy, the engine.
"""

from __future__ import annotations

import marshal
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..engine.run import Scope
    from ..model import HostFacts, PosixDecision
    from ..output.journal import Journal
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
        return guarded(lambda: _run(call, asking), removes=True)
    finally:
        asking.cancel()  # unless it answered: no owner, a policy error, anything raised


def _run(call: HookCall, asking: Asking) -> int:
    from ..errors import ExitCode  # noqa: PLC0415
    from .gate import no_owner_message  # noqa: PLC0415

    unit = call.unit
    policy = _policy(unit, call.policy)
    owners = policy.owners_for_unit(unit)
    if owners:
        return _clean_owners_of(unit, owners, policy, call, asking)
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
        from ..output.journal import Journal  # noqa: PLC0415

        Journal.for_hook(unit).send(
            f"policy error, nothing was removed after {unit} stopped: {exc}", "err"
        )
        raise


def _clean_owners_of(
    unit: str, owners: tuple[Owner, ...], policy: Policy, call: HookCall, asking: Asking
) -> int:
    import time  # noqa: PLC0415

    from ..engine.lock import HOOK_WAIT_LIMIT, LockBusy  # noqa: PLC0415
    from ..engine.run import Scope, clean  # noqa: PLC0415
    from ..errors import ExitCode  # noqa: PLC0415
    from ..output import report  # noqa: PLC0415
    from ..output.journal import Journal  # noqa: PLC0415

    target = None
    if call.metrics:  # before any work: a missing library or an unsafe directory stops it here
        from ..output import metrics  # noqa: PLC0415

        target = metrics.prepare(call.metrics)

    journal = Journal.for_hook(unit)
    notes, facts_hook = _stop_facts(unit, asking)
    scope = Scope(owners=frozenset(o.name for o in owners))
    started = time.time()
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
        if target is not None:
            target.close()
        return _gave_up(unit, busy, call, scope=scope, journal=journal, notes=notes)
    if target is not None:
        metrics.write(target, done, started, time.time(), posix)
    if waited:
        notes.append(waited)
    report.emit(
        done, as_json=call.json, quiet=call.quiet, notes=notes, extra={"unit": unit}, posix=posix
    )
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
    journal.send(
        why,
        "warning",
        [("IPCJANITOR_UNIT", unit), ("IPCJANITOR_OWNER", " ".join(sorted(scope.owners or ())))],
    )
    journal.close()
    if call.json:  # a document still, for whoever reads one; the record said it already
        report.emit([], as_json=True, quiet=call.quiet, notes=[*notes, why], extra={"unit": unit})
    return ExitCode.OK


class Asking:
    """systemd.unit_run(unit), asked by a child process while this one goes on.

    In the restart path, importing pystemd and the D-Bus round trips (~11 ms) overlap with
    parsing the policy and importing the engine. The child asks exactly what unit_run asks
    and sends the answer back through a pipe (marshal: plain tuples, no code). answer()
    returns what unit_run would have returned, and raises what it would have raised (a
    bug, not a D-Bus failure); a child that ends without an answer is no answer (the hook
    then decides from the policy and /proc alone, and says why). When the process cannot
    fork, the question is asked here, at answer(). Fork only where no other thread runs:
    the hook's own process.
    """

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self._pid: int | None = None
        self._fd: int | None = None
        try:
            read_end, write_end = os.pipe()
            pid = os.fork()
        except OSError:  # EAGAIN, ENOMEM: ask in this process, later
            return
        if pid == 0:  # the child: ask, answer, leave without running any of the parent's exits
            status = 0
            try:
                os.close(read_end)
                _write_all(write_end, marshal.dumps(_asked(unit)))
            except BaseException:  # whatever it is, the parent reads no answer and says so
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        self._pid, self._fd = pid, read_end

    def answer(self) -> tuple[UnitRun | None, str | None]:
        """What systemd.unit_run(unit) returns (or raises)."""
        from ..systemd.bus import UnitRun, unit_run  # noqa: PLC0415

        if self._fd is None:
            return unit_run(self.unit)
        chunks = []
        while chunk := os.read(self._fd, 65536):
            chunks.append(chunk)
        ended = self._reap()
        if not chunks:
            return None, f"no answer from systemd: the process asking it ended ({ended})"
        what, value = marshal.loads(b"".join(chunks))
        if what == "run":
            return UnitRun(*value), None
        if what == "bug":
            raise RuntimeError(f"asking systemd about {self.unit}: {value}")
        return None, value

    def cancel(self) -> None:
        """Not needed (or no longer): end the child, ours by its pid, and reap it."""
        if self._pid is not None:
            import signal  # noqa: PLC0415  (not before the fork: it builds enums)

            os.kill(self._pid, signal.SIGKILL)
            self._reap()

    def _reap(self) -> str:
        pid, fd = self._pid, self._fd
        self._pid = self._fd = None
        if fd is not None:
            os.close(fd)
        if pid is None:
            return "already reaped"
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"


def _asked(unit: str) -> tuple[str, Any]:
    """unit_run(unit) as plain data: ("run", fields), ("none", why) or ("bug", what)."""
    from ..systemd.bus import unit_run  # noqa: PLC0415

    try:
        run, why = unit_run(unit)
    except Exception as exc:  # a bug, not "no bus": the parent raises it
        return "bug", f"{type(exc).__name__}: {exc}"
    return ("run", tuple(run)) if run is not None else ("none", why)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)

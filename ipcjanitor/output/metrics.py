"""Prometheus textfile-collector metrics for `clean --metrics` and `hook --metrics`.

The text exposition format (version 0.0.4) is written here, without prometheus_client: the
hook pays no import for it (bench/README.md). Every series carries source="clean"|"hook" and
unit="...", so the timer's file and each hook's file never hold the same series (node_exporter
refuses duplicates across files). The file is written by descriptor. Before anything is
removed, prepare() opens FILE's directory with chase.open_directory (as root: root's and
writable by root alone; a directory above it may be another user's, as Debian's
/var/lib/prometheus is the prometheus user's) and checks what the name holds now. write()
then reads the previous file back through that descriptor (to carry `*_total` counters and
the last success forward: they reset only when the file is deleted), creates a temporary
file beside it (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0644 set by fchmod, so neither the umask nor
a planted FIFO or symlink decides anything), and renames it over FILE within the directory.
Nothing is opened, read or chmodded by a name another user controls.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from ..chase import READ, Refused, file_kind, open_directory
from ..errors import IpcJanitorError, MetricsError, PolicyErrors, exit_code_of
from ..model import Decision, IpcKind, PosixDecision, PosixKind, Verdict

MODE = 0o644  # node_exporter runs as another user (prometheus)
MAX_PREVIOUS = 2**20  # ours is a few KiB: a larger file is not one to carry counters from
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_TRIES = 8  # temporary names tried before giving up (each is random: a clash is a leftover)


class _Bad(Exception):
    """What is wrong with the file's name or the write, and what to do (becomes MetricsError)."""


class Target:
    """FILE's checked directory, held by an O_PATH descriptor, and FILE's name in it."""

    def __init__(self, path: str, dir_fd: int, directory: str, name: str, strict: bool) -> None:
        self.path = path  # as the user named it
        self.dir_fd: int | None = dir_fd
        self.directory = directory  # its real path, for messages
        self.name = name
        self.strict = strict
        self.real = os.path.join(directory, name)

    def close(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def open_previous(self) -> int | None:
        """The file at the name, opened for reading only once its inode was checked (O_PATH):
        a regular file with one link, root's if root runs; None if there is none."""
        try:
            pfd = os.open(self.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(pfd)
            self._check(st)
            rfd = os.open(self.name, READ, dir_fd=self.dir_fd)
        finally:
            os.close(pfd)
        now = os.fstat(rfd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(rfd)
            raise _Bad(f"{self.real} was replaced while it was being read; run again")
        return rfd

    def _check(self, st: os.stat_result) -> None:
        real = self.real
        if stat.S_ISLNK(st.st_mode):
            raise _Bad(
                f"{real} is a symlink; ipcjanitor replaces FILE by a rename in its directory and "
                f"follows no link there (rm {real}, or name the file it points to)"
            )
        if stat.S_ISDIR(st.st_mode):
            raise _Bad(f"{real} is a directory, not a regular file (name a file in it)")
        if not stat.S_ISREG(st.st_mode):
            raise _Bad(f"{real} is {file_kind(st)}, not a regular file (rm {real})")
        if self.strict and st.st_uid != 0:
            raise _Bad(
                f"file {real} is owned by uid {st.st_uid}, not root; as root ipcjanitor neither "
                f"reads nor replaces another user's file (rm {real}, or chown root {real})"
            )
        if self.strict and st.st_nlink != 1:
            raise _Bad(
                f"file {real} has {st.st_nlink} links: another name shares it, whose file root "
                f"would read and make public (rm {real}; the next run writes a new one)"
            )

    def replace(self, data: bytes) -> None:
        """A temporary file beside it, written, made 0644 by fchmod and renamed over it."""
        fd, tmp = self._create()
        try:
            os.fchmod(fd, MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            self._discard(tmp)
            raise
        os.close(fd)
        try:
            os.rename(tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            self._discard(tmp)
            raise

    def _create(self) -> tuple[int, str]:
        for _ in range(_TRIES):
            tmp = _temporary_name(self.name)
            try:
                return os.open(tmp, _CREATE, MODE, dir_fd=self.dir_fd), tmp
            except FileExistsError:  # a leftover, or anything else at that name: never opened
                continue
        raise _Bad(f"{_TRIES} temporary names in {self.directory} were taken; remove the "
                   f"{self.name}.*.tmp files there")  # fmt: skip

    def _discard(self, tmp: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=self.dir_fd)


def _temporary_name(name: str) -> str:
    """Not *.prom, so node_exporter never reads it half-written."""
    return f"{name}.{os.urandom(6).hex()}.tmp"


def prepare(path: str) -> Target:
    """Before anything is removed: FILE's directory opened and checked, and
    what its name holds now checked; else a MetricsError saying that nothing was removed."""
    strict = os.geteuid() == 0
    directory, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise MetricsError(path, "names a directory; name a file in it", removed_nothing=True)
    try:
        dir_fd, real = open_directory(directory or ".", strict, shown=path)
    except Refused as exc:
        what = f" (mkdir -p {directory}, root's, mode 0755)" if exc.missing else ""
        raise MetricsError(path, exc.problem + what, removed_nothing=True) from None
    target = Target(path, dir_fd, real, name, strict)
    try:
        rfd = target.open_previous()
    except (_Bad, OSError) as exc:
        target.close()
        raise MetricsError(path, _problem(exc, target), removed_nothing=True) from None
    if rfd is not None:
        os.close(rfd)
    return target


def _problem(exc: BaseException, target: Target) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.EISDIR:
            return f"{target.real} is a directory, not a regular file (name a file in it)"
        return f"cannot write {target.real}: {exc.strerror}"
    return str(exc)


LabelSet = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, LabelSet], float]
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def escape(value: str) -> str:
    """A label value as the text exposition format writes it: \\, " and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], value)


def parse(text: str) -> Samples:
    """The samples of a text-format file (ours: comments skipped, no timestamps); a line that
    is not a sample raises ValueError."""
    out: Samples = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.fullmatch(line.strip())
        if m is None:
            raise ValueError(f"not a sample: {line!r}")
        labels = []
        body = m.group(2) or ""
        pos = 0
        while pos < len(body):
            lm = _LABEL.match(body, pos)
            if lm is None or lm.end() == pos:
                raise ValueError(f"bad labels: {line!r}")
            labels.append((lm.group(1), _unescape(lm.group(2))))
            pos = lm.end()
        out[(m.group(1), tuple(sorted(labels)))] = float(m.group(3))
    return out


def _value(v: float) -> str:
    if math.isfinite(v):
        return repr(float(v))
    return "NaN" if math.isnan(v) else "+Inf" if v > 0 else "-Inf"


class Family:
    """One metric family: its HELP and TYPE lines and its samples, in the order added."""

    def __init__(self, name: str, kind: str, text: str) -> None:
        self.name, self.kind, self.text = name, kind, text
        self.samples: list[tuple[LabelSet, float]] = []

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(labels.items()), value))

    def render(self, common: LabelSet) -> str:
        help_text = self.text.replace("\\", "\\\\").replace("\n", "\\n")
        lines = [f"# HELP {self.name} {help_text}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            pairs = ",".join(f'{k}="{escape(v)}"' for k, v in (*common, *labels))
            lines.append(f"{self.name}{{{pairs}}} {_value(value)}")
        return "\n".join(lines) + "\n"


def _previous(target: Target) -> Samples:
    """Samples of the last file written, to carry counters and the last success forward."""
    rfd = target.open_previous()
    if rfd is None:
        return {}
    chunks, size = [], 0
    try:
        while size <= MAX_PREVIOUS and (chunk := os.read(rfd, MAX_PREVIOUS + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(rfd)
    if size > MAX_PREVIOUS:
        return {}  # not ours: start the counters afresh
    try:
        return parse(b"".join(chunks).decode())
    except ValueError:  # UnicodeDecodeError included
        return {}  # a damaged file: start the counters afresh


class Run(NamedTuple):
    """Who wrote the file: the labels every series carries, so that the timer's file and each
    hook's (one per unit) never write the same series."""

    source: str  # "clean" (the timer, or a manual clean) or "hook"
    unit: str  # the hooked unit; for clean the unit it runs in ("" outside systemd)

    def labels(self) -> LabelSet:
        return (("source", self.source), ("unit", self.unit))


def own_unit(cgroup: str = "/proc/self/cgroup") -> str:
    """The service this process runs in (ipcjanitor.service under the timer), from the
    unified hierarchy's line; "" when it is not a service's (a login session's manual run)."""
    try:
        with open(cgroup, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        if line.startswith("0::"):
            last = line[3:].rstrip("/").rsplit("/", 1)[-1]
            return last if last.endswith(".service") else ""
    return ""


def write(
    target: Target | str,
    decisions: Sequence[Decision],
    started: float,
    finished: float,
    posix: Sequence[PosixDecision] = (),
    *,
    run: Run,
    outcome: Outcome | None = None,
) -> None:
    """Write this run's metrics to the prepared target (or a path: prepared now) atomically, a
    temporary file renamed over it. started and finished are time.monotonic() readings. The
    POSIX kinds are labelled posix-shm, posix-sem, posix-mq beside shm, sem, msg. The target
    is closed."""
    if isinstance(target, str):
        target = prepare(target)
    try:
        before = _previous(target)
        outcome = outcome or Outcome()
        families = _families(before, decisions, posix, run, outcome, took=finished - started)
        families += _owner_families(decisions, posix, outcome.owners)
        families += outcome.health
        text = "".join(f.render(run.labels()) for f in families)
        target.replace(text.encode())
    except (_Bad, OSError) as exc:
        raise MetricsError(target.path, _problem(exc, target), removed_nothing=False) from None
    finally:
        target.close()


def _families(
    before: Samples,
    decisions: Sequence[Decision],
    posix: Sequence[PosixDecision],
    run: Run,
    outcome: Outcome,
    *,
    took: float,
) -> list[Family]:
    now = time.time()
    objects = Family("ipcjanitor_objects", "gauge", "Objects seen by the last run, by verdict")
    removed = Family("ipcjanitor_removed_objects_total", "counter",
                     "Objects removed, over all runs")  # fmt: skip
    failed = Family("ipcjanitor_failed_removals", "gauge",
                    "Removals the kernel refused in the last run")  # fmt: skip
    counts = Counter((d.obj.kind.value, d.verdict.value) for d in decisions)
    counts.update((d.obj.kind.value, d.verdict.value) for d in posix)
    common = run.labels()
    for kind in (*IpcKind, *PosixKind):
        for verdict in Verdict:
            objects.add(counts[(kind.value, verdict.value)], kind=kind.value, verdict=verdict.value)
        key = (removed.name, tuple(sorted((*common, ("kind", kind.value)))))
        removed.add(before.get(key, 0.0) + counts[(kind.value, Verdict.REMOVED.value)],
                    kind=kind.value)  # fmt: skip
        failed.add(counts[(kind.value, Verdict.FAILED.value)], kind=kind.value)
    last = Family("ipcjanitor_last_run_timestamp_seconds", "gauge", "When the last run ended")
    last.add(now)
    duration = Family("ipcjanitor_run_duration_seconds", "gauge",
                      "How long the last run took (monotonic clock)")  # fmt: skip
    duration.add(took)
    failures = sum(counts[(k.value, Verdict.FAILED.value)] for k in (*IpcKind, *PosixKind))
    ok = outcome.exit_code == 0 and not failures and not outcome.gave_up
    success = Family("ipcjanitor_last_success_timestamp_seconds", "gauge",
                     "When a run last ended without a failed removal, having cleaned")  # fmt: skip
    success.add(now if ok else before.get((success.name, common), 0.0))
    gave_up = Family("ipcjanitor_last_run_gave_up", "gauge",
                     "1: the last run gave up on a busy run lock (exit 0, nothing was "
                     "removed), 0: it ran")  # fmt: skip
    gave_up.add(1.0 if outcome.gave_up else 0.0)
    gave_ups = Family("ipcjanitor_gave_up_total", "counter",
                      "Runs that gave up on a busy run lock, over all runs")  # fmt: skip
    gave_ups.add(before.get((gave_ups.name, common), 0.0) + (1 if outcome.gave_up else 0))
    code = Family("ipcjanitor_last_run_exit_code", "gauge",
                  "The last run's exit status (0 done, 1 a removal failed, 64 usage, 77 not "
                  "permitted, 78 policy error, 70 internal error)")  # fmt: skip
    code.add(outcome.exit_code)
    policy_ok = Family("ipcjanitor_policy_ok", "gauge",
                       "1: the last run loaded its policy, 0: a policy error")  # fmt: skip
    policy_ok.add(1.0 if outcome.policy_ok else 0.0)
    return [objects, removed, failed, last, duration, success, code, policy_ok, gave_up, gave_ups]


OWNER_SERIES_MAX = 100  # owners beyond this: no per-owner series (cardinality)


class Outcome:
    """What the command tells its metrics file as it goes; recording() fills in the end."""

    def __init__(self) -> None:
        self.decisions: Sequence[Decision] = ()
        self.posix: Sequence[PosixDecision] = ()
        self.owners: Sequence[str] = ()  # the policy owners in scope, for per-owner series
        self.exit_code = 0
        self.policy_ok = True
        self.gave_up = False  # the hook gave up on a busy run lock: exit 0, nothing cleaned
        self.health: list[Family] = []  # what doctor knows (the timer's clean)

    def record(self, decisions: Sequence[Decision], posix: Sequence[PosixDecision]) -> None:
        self.decisions, self.posix = decisions, posix


def recording(
    path: str,
    run: Run,
    body: Callable[[Outcome], int],
    health: Callable[[Outcome], list[Family]] | None = None,
) -> int:
    """body's exit code, FILE written whatever body ends in (a policy error, an exception
    too: its exit code and policy_ok say so), with the run's duration on the monotonic clock
    from before FILE was checked; FILE is checked first (a MetricsError: nothing removed)."""
    started = time.monotonic()
    target = prepare(path)
    outcome = Outcome()
    try:
        outcome.exit_code = body(outcome)
    except BaseException as exc:
        outcome.exit_code = exit_code_of(exc)
        outcome.policy_ok = not isinstance(exc, PolicyErrors)
        try:
            _finish(target, run, outcome, started, health)
        except MetricsError as failed:  # what stopped the run is the error to report
            exc.add_note(str(failed))
        raise
    _finish(target, run, outcome, started, health)
    return outcome.exit_code


def _finish(
    target: Target,
    run: Run,
    outcome: Outcome,
    started: float,
    health: Callable[[Outcome], list[Family]] | None,
) -> None:
    if health is not None:
        try:
            outcome.health = health(outcome)
        except (OSError, IpcJanitorError):
            outcome.health = []  # what doctor could not read is left out, the run is not
    write(target, outcome.decisions, started, time.monotonic(), outcome.posix, run=run,
          outcome=outcome)  # fmt: skip


def _owner_families(
    decisions: Sequence[Decision], posix: Sequence[PosixDecision], owners: Sequence[str]
) -> list[Family]:
    if not owners or len(owners) > OWNER_SERIES_MAX:
        return []
    fam = Family("ipcjanitor_owner_objects", "gauge",
                 "Objects of each policy owner seen by the last run, by verdict")  # fmt: skip
    counts = Counter((d.owner, d.verdict.value) for d in decisions)
    counts.update((d.owner, d.verdict.value) for d in posix)
    for owner in sorted(set(owners)):
        for verdict in Verdict:
            if verdict is not Verdict.UNOWNED:
                fam.add(counts[(owner, verdict.value)], owner=owner, verdict=verdict.value)
    return [fam]


class LimitLike(Protocol):
    """doctor's LimitRow, as far as metrics read it."""

    @property
    def kind(self) -> str: ...
    @property
    def measure(self) -> str: ...
    @property
    def limit(self) -> str: ...
    @property
    def used(self) -> int: ...
    @property
    def max(self) -> int: ...


def health_families(
    rows: Iterable[LimitLike],
    stuck_pipes: int,
    unhooked: Sequence[Mapping[str, str]] | None,
) -> list[Family]:
    """What doctor knows: each table's use and limit, the stuck pipes, the owners without a
    hook (None: the policy could not be read, so not exported)."""
    used = Family("ipcjanitor_table_used", "gauge",
                  "Use of each IPC table, in its measure (objects, pages, semaphores, bytes, "
                  "inodes, queues)")  # fmt: skip
    most = Family("ipcjanitor_table_limit", "gauge",
                  "The kernel limit of each IPC table, in the same measure (0: none)")  # fmt: skip
    for r in rows:
        used.add(r.used, kind=r.kind, measure=r.measure, limit=r.limit)
        most.add(r.max, kind=r.kind, measure=r.measure, limit=r.limit)
    pipes = Family("ipcjanitor_stuck_pipes", "gauge",
                   "Processes blocked writing to a pipe no other process reads")  # fmt: skip
    pipes.add(stuck_pipes)
    out = [used, most, pipes]
    if unhooked is not None:
        count = Family("ipcjanitor_owners_without_hook", "gauge",
                       "Policy owners whose unit has no safe ipcjanitor hook")  # fmt: skip
        lacking = [h for h in unhooked if "note" not in h]
        count.add(len(lacking))
        out.append(count)
        if len(lacking) <= OWNER_SERIES_MAX:
            each = Family("ipcjanitor_owner_without_hook", "gauge",
                          "1 for each owner whose unit has no safe ipcjanitor hook")  # fmt: skip
            for h in lacking:
                each.add(1, owner=h["owner"], hooked_unit=h["unit"])
            out.append(each)
    return out

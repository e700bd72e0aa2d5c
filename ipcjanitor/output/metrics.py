"""Prometheus textfile-collector metrics for `clean --metrics` and `hook --metrics`.

prometheus_client (the optional extra `ipcjanitor[metrics]`, Debian's
python3-prometheus-client) renders the text (generate_latest); the file is written here, by
descriptor. Before anything is removed, prepare() opens FILE's directory with
chase.open_directory (as root: root's and writable by root alone; a directory above it may be
another user's, as Debian's /var/lib/prometheus is the prometheus user's) and checks what the
name holds now. write() then reads the previous file back through that descriptor (to carry
`*_total` counters and the last success forward: they reset only when the file is deleted),
creates a temporary file beside it (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0644 set by fchmod, so
neither the umask nor a planted FIFO or symlink decides anything), and renames it over FILE
within the directory. Nothing is opened, read or chmodded by a name another user controls.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..chase import READ, Refused, file_kind, open_directory
from ..errors import MetricsError, UsageError
from ..model import Decision, IpcKind, PosixDecision, PosixKind, Verdict

MISSING = (
    "--metrics needs the Python package prometheus_client: apt install "
    "python3-prometheus-client, or pip install 'ipcjanitor[metrics]'"
)
MODE = 0o644  # node_exporter runs as another user (prometheus)
MAX_PREVIOUS = 2**20  # ours is a few KiB: a larger file is not one to carry counters from
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_TRIES = 8  # temporary names tried before giving up (each is random: a clash is a leftover)


def require() -> Any:
    """The prometheus_client module, or a one-line UsageError saying how to get it."""
    try:
        import prometheus_client  # noqa: PLC0415
        import prometheus_client.parser  # noqa: PLC0415
    except ImportError:
        raise UsageError(MISSING) from None
    return prometheus_client


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
    """Before anything is removed: prometheus_client, FILE's directory opened and checked, and
    what its name holds now checked; else a MetricsError saying that nothing was removed."""
    require()
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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _previous(target: Target, pc: Any) -> Samples:
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
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in pc.parser.text_string_to_metric_families(b"".join(chunks).decode())
            for s in fam.samples
        }
    except ValueError:  # UnicodeDecodeError included
        return {}  # a damaged file: start the counters afresh


def write(
    target: Target | str,
    decisions: Sequence[Decision],
    started: float,
    finished: float,
    posix: Sequence[PosixDecision] = (),
) -> None:
    """Write this run's metrics to the prepared target (or a path: prepared now) atomically, a
    temporary file renamed over it; the POSIX kinds are labelled posix-shm, posix-sem,
    posix-mq beside shm, sem, msg. The target is closed."""
    pc = require()
    if isinstance(target, str):
        target = prepare(target)
    try:
        before = _previous(target, pc)
        reg = _registry(pc, before, decisions, posix, took=finished - started, finished=finished)
        target.replace(pc.generate_latest(reg))
    except (_Bad, OSError) as exc:
        raise MetricsError(target.path, _problem(exc, target), removed_nothing=False) from None
    finally:
        target.close()


def _registry(
    pc: Any,
    before: Samples,
    decisions: Sequence[Decision],
    posix: Sequence[PosixDecision],
    *,
    took: float,
    finished: float,
) -> Any:
    if hasattr(pc, "disable_created_metrics"):
        pc.disable_created_metrics()
    reg = pc.CollectorRegistry()
    objects = pc.Gauge("ipcjanitor_objects", "Objects seen by the last run, by verdict",
                       ["kind", "verdict"], registry=reg)  # fmt: skip
    removed = pc.Counter("ipcjanitor_removed_objects", "Objects removed, over all runs",
                         ["kind"], registry=reg)  # fmt: skip
    failed = pc.Gauge("ipcjanitor_failed_removals", "Removals the kernel refused in the last run",
                      ["kind"], registry=reg)  # fmt: skip
    counts = Counter((d.obj.kind.value, d.verdict.value) for d in decisions)
    counts.update((d.obj.kind.value, d.verdict.value) for d in posix)
    for kind in (*IpcKind, *PosixKind):
        for verdict in Verdict:
            objects.labels(kind.value, verdict.value).set(counts[(kind.value, verdict.value)])
        prior = before.get(("ipcjanitor_removed_objects_total", (("kind", kind.value),)), 0.0)
        removed.labels(kind.value).inc(prior + counts[(kind.value, Verdict.REMOVED.value)])
        failed.labels(kind.value).set(counts[(kind.value, Verdict.FAILED.value)])
    pc.Gauge("ipcjanitor_last_run_timestamp_seconds", "When the last run ended",
             registry=reg).set(finished)  # fmt: skip
    pc.Gauge("ipcjanitor_run_duration_seconds", "How long the last run took",
             registry=reg).set(took)  # fmt: skip
    ok = not any(d.verdict is Verdict.FAILED for d in decisions) and not any(
        d.verdict is Verdict.FAILED for d in posix
    )
    name = "ipcjanitor_last_success_timestamp_seconds"
    last_ok = finished if ok else before.get((name, ()), 0.0)
    pc.Gauge(name, "When a run last ended without a failed removal", registry=reg).set(last_ok)
    return reg

"""Prometheus textfile-collector metrics for `clean --metrics` and `hook --metrics`.

Uses prometheus_client (the optional extra `ipcjanitor[metrics]`, Debian's
python3-prometheus-client) and its atomic write_to_textfile. Counters are carried across runs
by reading the previous file back, so `*_total` only resets when the file is deleted.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..model import Decision, IpcKind, PosixDecision, PosixKind, Verdict

MISSING = (
    "--metrics needs the Python package prometheus_client: apt install "
    "python3-prometheus-client, or pip install 'ipcjanitor[metrics]'"
)


def require() -> Any:
    """The prometheus_client module, or a one-line UsageError saying how to get it."""
    try:
        import prometheus_client  # noqa: PLC0415
        import prometheus_client.parser  # noqa: PLC0415
    except ImportError:
        raise UsageError(MISSING) from None
    return prometheus_client


def _previous(path: str, pc: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of the last file written, to carry counters and the last success forward."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}
    try:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in pc.parser.text_string_to_metric_families(text)
            for s in fam.samples
        }
    except ValueError:
        return {}  # a damaged file: start the counters afresh


def write(
    path: str,
    decisions: Sequence[Decision],
    started: float,
    finished: float,
    posix: Sequence[PosixDecision] = (),
) -> None:
    """Write this run's metrics to `path` atomically (a temporary file renamed over it);
    the POSIX kinds are labelled posix-shm, posix-sem, posix-mq beside shm, sem, msg."""
    pc = require()
    if hasattr(pc, "disable_created_metrics"):
        pc.disable_created_metrics()
    before = _previous(path, pc)
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
             registry=reg).set(finished - started)  # fmt: skip
    ok = not any(d.verdict is Verdict.FAILED for d in decisions) and not any(
        d.verdict is Verdict.FAILED for d in posix
    )
    name = "ipcjanitor_last_success_timestamp_seconds"
    last_ok = finished if ok else before.get((name, ()), 0.0)
    pc.Gauge(name, "When a run last ended without a failed removal", registry=reg).set(last_ok)
    try:
        pc.write_to_textfile(path, reg)
    except OSError as exc:
        raise UsageError(f"cannot write metrics to {path}: {exc.strerror}") from None
    os.chmod(path, 0o644)  # node_exporter runs as another user

"""doctor's first check: each IPC table's use against the kernel's limit (lsipc --global).

The rows of the sysctl limits (kernel.shmmni, shmall, sem, msgmni) are read here; the POSIX
rows (/dev/shm, the queues, RLIMIT_MSGQUEUE) are built by doctor_posix.py from the same
LimitRow, and one column description (LIMIT_COLUMNS) renders both in text and JSON.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..model import IpcKind, IpcObject
from ..output.columns import Column, Style

THRESHOLD = 0.90
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class Limits(NamedTuple):
    shmmni: int
    shmall: int  # pages
    semmni: int
    semmns: int
    msgmni: int


class LimitRow(NamedTuple):
    kind: str
    measure: str  # "objects", "pages", "semaphores"
    limit: str  # the sysctl that bounds it
    used: int
    max: int
    stale: int | None  # of the objects counted, how many `clean` would free now

    @property
    def problem(self) -> bool:
        return self.max > 0 and self.used >= THRESHOLD * self.max

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.max if self.max else 0.0

    @property
    def consequence(self) -> str:
        """What happens when it is full."""
        if self.kind == "posix-shm" and self.measure == "bytes":
            return (
                "a full tmpfs is a SIGBUS at the next page fault of a process writing into a "
                "mapping there, not an error it can handle"
            )
        if self.limit == "RLIMIT_MSGQUEUE":
            return "close to the EMFILE of this user's next mq_open"
        return "close to No space left on device"


def read_limits(procfs: Path = Path("/proc")) -> Limits:
    k = procfs / "sys" / "kernel"
    sem = (k / "sem").read_text().split()  # SEMMSL SEMMNS SEMOPM SEMMNI
    return Limits(
        shmmni=int((k / "shmmni").read_text()),
        shmall=int((k / "shmall").read_text()),
        semmni=int(sem[3]),
        semmns=int(sem[1]),
        msgmni=int((k / "msgmni").read_text()),
    )


def limit_rows(
    objects: Sequence[IpcObject], limits: Limits, stale: Sequence[IpcObject] | None
) -> list[LimitRow]:
    """PURE: each table's use against its limits. stale: the objects `clean` would free now
    (None: unknown); each row counts them in its own measure (pages, semaphores, objects)."""
    used = _measures(objects)
    freed = None if stale is None else _measures(stale)

    def row(kind: str, measure: str, limit: str, most: int) -> LimitRow:
        n, free = used[kind, measure], None if freed is None else freed[kind, measure]
        return LimitRow(kind, measure, limit, n, most, free)

    return [
        row("shm", "objects", "kernel.shmmni", limits.shmmni),
        row("shm", "pages", "kernel.shmall", limits.shmall),
        row("sem", "objects", "kernel.sem semmni", limits.semmni),
        row("sem", "semaphores", "kernel.sem semmns", limits.semmns),
        row("msg", "objects", "kernel.msgmni", limits.msgmni),
    ]


def _measures(objects: Iterable[IpcObject]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for o in objects:
        out[o.kind.value, "objects"] += 1
        if o.kind is IpcKind.SHM:
            out["shm", "pages"] += -(-o.size // PAGE_SIZE)
        elif o.kind is IpcKind.SEM:
            out["sem", "semaphores"] += o.nsems
    return out


def _limit_text(r: LimitRow, style: Style) -> str:
    return r.limit + (f"  <- PROBLEM: {r.consequence}" if r.problem else "")


# doctor's table (lsipc --global's RESOURCE, USED, LIMIT, USE%): one description for the text
# and the JSON; STALE is what `clean` would free now, in the row's own measure
LIMIT_COLUMNS: tuple[Column[LimitRow], ...] = (
    Column("KIND", "shm, sem or msg", lambda r, s: r.kind, "kind", lambda r: r.kind),
    Column("MEASURE", "objects, pages or semaphores", lambda r, s: r.measure,
           "measure", lambda r: r.measure),
    Column("USED", "in use now", lambda r, s: str(r.used), "used", lambda r: r.used, right=True),
    Column("MAX", "the kernel's limit", lambda r, s: str(r.max), "max", lambda r: r.max,
           right=True),
    Column("USE%", "used / max", lambda r, s: f"{r.percent:.1f}%",
           "percent", lambda r: round(r.percent, 1), right=True),
    Column("STALE", "what clean would free now, in the row's measure (- unknown)",
           lambda r, s: "-" if r.stale is None else str(r.stale), "stale", lambda r: r.stale,
           right=True),
    Column("LIMIT", "the sysctl that sets max", _limit_text, "limit", lambda r: r.limit),
    Column("PROBLEM", "", lambda r, s: "", "problem", lambda r: r.problem, listed=False),
)  # fmt: skip

"""PURE: the record of the wall clock's steps this boot, and what it proves.

A process's start is counted on the boot clock and turned into wall time with today's
offset (wall minus boot clock), while an object's times were written with the wall clock of
their moment. The two agree only if the offset has not moved in between, and it moves only
when the wall clock is stepped. ipcjanitor-clock.timer fires on every step (OnClockChange=)
and once as it starts (OnActiveSec=0); each time `ipcjanitor record-clock` adds a Reading.
From the first reading after the timer last started, while it stays active and no trigger
is left unread, every offset the clock has held is in the record. For a process started
since then, the margin that covers every step (forward_step) is known. For any other
process, no gap between its start and an object's time proves anything (coverage()).

Nothing here reads a clock or a file: kernel/clock.py does, systemd/bus.py asks systemd.
"""

from __future__ import annotations

import math
from typing import NamedTuple

RECORD_NAME = "clock-steps"  # in root's state directory (state.ROOT_STATE_DIR)
TIMER = "ipcjanitor-clock.timer"
HEADER = "ipcjanitor clock record 1"
JITTER = 0.5  # seconds: reading two clocks in a row is not instantaneous
KEEP = 64  # readings kept besides the first: clock steps are few, a record stays small


class Reading(NamedTuple):
    """The clocks at one moment, as the recorder read them."""

    mono: float  # CLOCK_MONOTONIC: what systemd's timestamps of the timer count
    boot: float  # CLOCK_BOOTTIME: what processes' start times count
    offset: float  # wall minus boot clock: moves only when the wall clock is stepped


class Record(NamedTuple):
    """Every reading of one boot, in one time namespace (up to KEEP + 1 of them)."""

    boot_id: str
    time_ns: str
    low: float  # the smallest offset of every reading this record ever held
    readings: tuple[Reading, ...]  # the first, and the latest KEEP; oldest first


class TimerState(NamedTuple):
    """What systemd says of ipcjanitor-clock.timer (monotonic seconds)."""

    active: bool
    since: float  # ActiveEnterTimestampMonotonic: when it last became active
    last_trigger: float  # LastTriggerUSecMonotonic: its last firing (0: never)


class Coverage(NamedTuple):
    """From when every step of the wall clock is in the record, and the lowest offset."""

    since_boot: float | None  # boot-clock seconds; None: no moment is covered
    low: float | None  # the smallest offset recorded; None without a usable record
    gap: str  # why the steps before since_boot (all steps, without it) may be unrecorded


def add(record: Record | None, boot_id: str, time_ns: str, reading: Reading) -> Record:
    """`record` with one more reading; a record of another boot or time namespace is
    replaced, its clocks are not these."""
    if record is None or (record.boot_id, record.time_ns) != (boot_id, time_ns):
        return Record(boot_id, time_ns, reading.offset, (reading,))
    first, *rest = record.readings
    kept = (first, *rest[-(KEEP - 1) :], reading)
    return Record(boot_id, time_ns, min(record.low, reading.offset), kept)


def render(record: Record) -> str:
    lines = [HEADER, f"boot {record.boot_id}", f"timens {record.time_ns}", f"low {record.low!r}"]
    lines += [f"reading {r.mono!r} {r.boot!r} {r.offset!r}" for r in record.readings]
    return "\n".join(lines) + "\n"


def parse(text: str) -> Record | None:
    """The record `text` holds, or None when it is not one, whole and well-formed."""
    lines = text.splitlines()
    if len(lines) < 5 or lines[0] != HEADER:
        return None
    head = [ln.split(" ") for ln in lines[1:4]]
    if [f[0] for f in head] != ["boot", "timens", "low"] or any(len(f) != 2 for f in head):
        return None
    readings = []
    try:
        low = _finite(head[2][1])
        for line in lines[4:]:
            f = line.split(" ")
            if f[0] != "reading" or len(f) != 4:
                return None
            readings.append(Reading(_finite(f[1]), _finite(f[2]), _finite(f[3])))
    except ValueError:
        return None
    if low > min(r.offset for r in readings):
        return None
    return Record(head[0][1], head[1][1], low, tuple(readings))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def coverage(  # noqa: PLR0917
    record: Record | str,
    boot_id: str,
    time_ns: str,
    now: Reading,
    timer: TimerState | None,
    no_timer: str,
) -> Coverage:
    """What the record proves now. `record` is the record, or why none could be read;
    `timer` what systemd says of the recorder's timer, or None with `no_timer` saying why.

    Complete from the first reading taken after the timer last became active, if it is
    active still, no firing came after the last reading (a reading lost, or not yet taken),
    and the offset now is the last reading's (no step since that the timer missed).
    """
    unusable = _unusable(record, boot_id, time_ns, timer, no_timer)
    if unusable is not None or timer is None or isinstance(record, str):
        return Coverage(None, None, unusable or "")
    low = min(record.low, now.offset)
    last = record.readings[-1]
    first = next((r for r in record.readings if r.mono >= timer.since), None)
    if timer.last_trigger > last.mono:
        gap = (f"{TIMER} fired {timer.last_trigger - last.mono:.1f}s after the last reading "
               "of the clock: a change not recorded yet")  # fmt: skip
    elif abs(now.offset - last.offset) > JITTER:
        gap = (f"the wall clock moved {now.offset - last.offset:+.1f}s against the boot clock "
               "since the last reading, unrecorded")  # fmt: skip
    elif first is None:
        gap = f"no reading of the clock was taken since {TIMER} started"
    else:
        return Coverage(first.boot, low, f"the clock's steps are recorded only since "
                                         f"{first.boot:.1f}s after boot, when {TIMER} first "
                                         "read it since it started")  # fmt: skip
    return Coverage(None, low, gap)


def _unusable(
    record: Record | str, boot_id: str, time_ns: str, timer: TimerState | None, no_timer: str
) -> str | None:
    """Why neither the timer nor the record can vouch for any step, or None."""
    if timer is None:
        return f"whether {TIMER} records the clock's steps is unknown ({no_timer})"
    if not timer.active:
        return f"{TIMER} is not active, so nothing records the clock's steps"
    if isinstance(record, str):
        return f"the record of the clock's steps is missing ({record})"
    if record.boot_id != boot_id:
        return "the record of the clock's steps is of another boot"
    if record.time_ns != time_ns:
        return "the clock's steps were recorded in another time namespace than ipcjanitor's"
    return None


def forward_step(offset: float, low: float | None) -> float:
    """How far the wall clock now stands ahead of where the record saw it lowest: how much
    younger than its object a live process may look (0 within the jitter of the readings)."""
    if low is None:
        return 0.0
    step = offset - low
    return step if step > JITTER else 0.0

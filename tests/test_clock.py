"""The record of the wall clock's steps (clock.py, PURE): what it keeps, and what it proves.

The property at the end drives a simulated boot: a wall clock stepped at random, a recorder
timer stopped and started at random, readings lost at random; whatever coverage() then
claims must hold for every moment it claims to cover.
"""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from ipcjanitor.clock import (
    JITTER,
    KEEP,
    TIMER,
    Reading,
    Record,
    TimerState,
    add,
    coverage,
    forward_step,
    parse,
    render,
)

BOOT = "6d1f1b2e-0f4c-4a52-9b1e-2f1d8a6c7e01"
NS = "time:[4026531834]"
ACTIVE = TimerState(active=True, since=1.0, last_trigger=1.0)


def reading(t: float, offset: float) -> Reading:
    return Reading(mono=t, boot=t + 0.25, offset=offset)  # the boot clock counts a suspend


def record(*readings: Reading) -> Record:
    r: Record | None = None
    for x in readings:
        r = add(r, BOOT, NS, x)
    assert r is not None
    return r


def test_the_record_keeps_the_lowest_offset_the_first_reading_and_the_latest() -> None:
    r = record(*(reading(float(t), 1000.0 + t % 7) for t in range(2, 2 + 3 * KEEP)))
    assert r.low == 1000.0
    assert r.readings[0] == reading(2.0, 1002.0)
    assert len(r.readings) == KEEP + 1
    assert r.readings[-1].mono == 1.0 + 3 * KEEP
    assert [x.mono for x in r.readings] == sorted(x.mono for x in r.readings)


def test_another_boot_or_time_namespace_starts_a_new_record() -> None:
    r = record(reading(2.0, 900.0), reading(3.0, 1000.0))
    assert add(r, "another-boot", NS, reading(4.0, 1000.0)).readings == (reading(4.0, 1000.0),)
    fresh = add(r, BOOT, "time:[1]", reading(4.0, 1000.0))
    assert fresh.low == 1000.0 and fresh.time_ns == "time:[1]"


readings = st.builds(
    Reading,
    st.floats(0, 1e9, allow_nan=False),
    st.floats(0, 1e9, allow_nan=False),
    st.floats(-1e10, 1e10, allow_nan=False),
)


@given(st.lists(readings, min_size=1, max_size=80))
def test_a_record_reads_back_as_written(xs: list[Reading]) -> None:
    r = record(*xs)
    assert parse(render(r)) == r


@given(st.text(max_size=400))
def test_any_text_is_a_record_or_none_never_an_exception(text: str) -> None:
    got = parse(text)
    assert got is None or isinstance(got, Record)


def test_a_damaged_record_is_no_record() -> None:
    good = render(record(reading(2.0, 1000.0)))
    assert parse(good) is not None
    for bad in (
        good.replace("reading ", "reading x"),
        good.replace("low ", "low nan"),
        "\n".join(ln for ln in good.splitlines() if not ln.startswith("reading")),
        good.replace("ipcjanitor clock record 1", "ipcjanitor clock record 9"),
        "",
    ):
        assert parse(bad) is None, bad


def cover(r: Record | str, now: Reading, timer: TimerState | None = ACTIVE):
    return coverage(r, BOOT, NS, now, timer, "no bus")


def test_complete_from_the_first_reading_since_the_timer_started() -> None:
    r = record(reading(0.5, 990.0), reading(2.0, 1000.0), reading(50.0, 1030.0))
    got = cover(r, reading(60.0, 1030.0), ACTIVE._replace(last_trigger=49.0))
    assert got.since_boot == 2.25 and got.low == 990.0  # an older low is safe to keep
    assert forward_step(1030.0, got.low) == 40.0
    assert forward_step(1000.3, 1000.0) == 0.0  # within the jitter of reading two clocks
    assert forward_step(1000.0, None) == 0.0


def test_each_reason_the_record_may_miss_a_step_names_it() -> None:
    r = record(reading(2.0, 1000.0), reading(50.0, 1030.0))
    now = reading(60.0, 1030.0)
    cases = {
        "is not active": cover(r, now, ACTIVE._replace(active=False)),
        "no bus": cover(r, now, None),
        "no record here": cover("no record here", now),
        "another boot": coverage(r, "other", NS, now, ACTIVE, ""),
        "another time namespace": coverage(r, BOOT, "time:[9]", now, ACTIVE, ""),
        "not recorded yet": cover(r, now, ACTIVE._replace(last_trigger=55.0)),
        "since the last reading": cover(r, reading(60.0, 1031.0)),
        "since the last reading ": cover(r, reading(60.0, 1029.0)),
        "no reading of the clock was taken since": cover(
            r, now, ACTIVE._replace(since=51.0)
        ),  # no OnActiveSec=0
    }
    for words, got in cases.items():
        assert got.since_boot is None, words
        assert words.strip() in got.gap, (words, got.gap)
        assert "clock" in got.gap or TIMER in got.gap
    # a restart of the timer: complete only from the first reading after it
    got = cover(r, now, ACTIVE._replace(since=40.0, last_trigger=40.0))
    assert got.since_boot == 50.25 and "since" in got.gap


class World(NamedTuple):
    """A simulated boot: the true offset over time, and the record its recorder left."""

    offsets: list[tuple[float, float]]  # (from this monotonic time, the true offset)
    record: Record | None
    timer: TimerState
    now: Reading


LAG = 0.01  # the recorder reads the clocks this long after the timer fires


@st.composite
def worlds(draw: st.DrawFn) -> World:
    offset = draw(st.floats(-1e4, 1e4))
    offsets = [(0.0, offset)]
    t = 0.0
    active, since, last_trigger = False, 0.0, 0.0
    rec: Record | None = None

    def read(at: float) -> None:
        nonlocal rec
        if draw(st.integers(0, 9)) == 0:  # the reading is lost: the service failed, and its
            rec = None  # ExecStopPost= removed the record (a write that failed, the recorder)
            return
        rec = add(rec, BOOT, NS, Reading(at, at, offsets[-1][1]))

    for _ in range(draw(st.integers(0, 12))):
        t += draw(st.floats(2 * LAG, 1000.0))  # steps further apart than the recorder's lag
        event = draw(st.sampled_from(["step", "step", "start", "stop"]))
        if event == "step":
            offsets.append((t, offsets[-1][1] + draw(st.floats(-4000.0, 4000.0))))
            if active:
                last_trigger = t
                read(t + LAG)
        elif event == "start" and not active:
            active, since, last_trigger = True, t, t  # OnActiveSec=0: fires as it starts
            read(t + LAG)
        elif event == "stop":
            active = False
    end = t + 2 * LAG + draw(st.floats(0.0, 100.0))
    now = Reading(end, end, offsets[-1][1])
    return World(offsets, rec, TimerState(active, since, last_trigger), now)


@given(worlds())
def test_whatever_the_record_claims_to_cover_every_step_there_is_measured(w: World) -> None:
    """The soundness of the margin: a process that started where the record is complete
    acted on its object at some moment u after it, with the wall clock's offset of that
    moment; the margin must cover how far the offset has moved since, for every such u."""
    got = cover(w.record or "none", w.now, w.timer)
    if got.since_boot is None:
        return
    step = forward_step(w.now.offset, got.low)
    for i, (start, off) in enumerate(w.offsets):
        end = w.offsets[i + 1][0] if i + 1 < len(w.offsets) else w.now.mono
        if end > got.since_boot:  # this offset held at some moment the record covers
            assert w.now.offset - off <= step + JITTER, (start, off, got)


def test_the_simulation_often_reaches_a_complete_record() -> None:
    """The property above proves something only if coverage often says complete.

    Hypothesis's exploration varies with the machine's speed even when derandomized (53 to over
    60 of 300 measured on a loaded and an idle 2-core machine), so the floor is one in ten: a
    strategy that lost its complete records (0 of 300) still fails here."""
    seen: list[bool] = []

    @settings(derandomize=True, max_examples=300, database=None)
    @given(worlds())
    def draw(w: World) -> None:
        seen.append(cover(w.record or "none", w.now, w.timer).since_boot is not None)

    draw()
    assert sum(seen) >= 30, f"{sum(seen)} of {len(seen)} complete"

"""Durations as systemd reads and prints them: held to the real `systemd-analyze timespan`."""

from __future__ import annotations

import subprocess

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ipcjanitor.policy.timespan import USEC_INFINITY, format_timespan, parse_timespan

UNITS = ["", "s", "sec", "min", "m", "h", "hr", "d", "days", "w", "ms", "us", "M", "y", "x"]


def systemd(text: str) -> tuple[int, str] | None:
    """(microseconds, the Human line) from systemd-analyze, or None where it refuses."""
    done = subprocess.run(["systemd-analyze", "timespan", "--", text],
                          capture_output=True, text=True, check=False, timeout=10)  # fmt: skip
    if done.returncode != 0:
        return None
    fields = dict(line.strip().split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    return int(fields["μs"]), fields["Human"]


terms = st.tuples(
    st.integers(0, 400).map(str),
    st.sampled_from(["", ".", ".5", ".25", ".000001"]),
    st.sampled_from(["", " "]),
    st.sampled_from(UNITS),
    st.sampled_from(["", " ", "  "]),
).map("".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(terms, min_size=0, max_size=3).map("".join))
@example("10min")
@example("1h 30min")
@example("500ms")
@example("2d")
@example("10s5m")
@example("3.")
@example(" 7 ")
@example("1.5s")
@example("90")
def test_parse_and_format_agree_with_systemd(text: str) -> None:
    real = systemd(text)
    try:
        ours = parse_timespan(text)
    except ValueError:
        assert real is None, f"systemd reads {text!r} as {real}"
        return
    assert real is not None, f"systemd refuses {text!r}, we read {ours} us"
    assert ours == real[0] and ours != USEC_INFINITY
    assert format_timespan(ours) == real[1]


def test_the_comparison_can_fail() -> None:
    """systemd really answers: a span it reads and one it refuses."""
    assert systemd("1h 30min") == (5400000000, "1h 30min")
    assert systemd("5x") is None

"""What /proc says about pids, and the record of wall-clock steps."""

from __future__ import annotations

import os
from pathlib import Path

from ipcjanitor.model import Presence
from ipcjanitor.processes import _boot_id, forward_clock_steps, parse_stat, probe


def test_forward_steps_are_measured_from_the_smallest_offset_of_this_boot(tmp_path: Path) -> None:
    state = tmp_path / "clock-offset"
    assert forward_clock_steps(state, 1000.0) == 0.0  # first run: records
    assert forward_clock_steps(state, 1000.2) == 0.0  # jitter is not a step
    assert forward_clock_steps(state, 1012.0) == 12.0  # stepped forward 12 s since
    assert forward_clock_steps(state, 995.0) == 0.0  # stepped back: a new smallest offset
    assert forward_clock_steps(state, 1012.0) == 17.0
    state.write_text(f"another-boot {1.0!r}\n")  # a record from before a reboot is ignored
    assert forward_clock_steps(state, 1012.0) == 0.0
    assert state.read_text().split()[0] == _boot_id()


def test_an_unwritable_record_just_cannot_widen(tmp_path: Path) -> None:
    assert forward_clock_steps(tmp_path / "missing-dir" / "x" / "clock-offset", 5.0) == 0.0


def test_parse_stat_handles_spaces_and_parens_in_comm() -> None:
    text = "42 (a (weird) name) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0"
    state, start = parse_stat(text, btime=1000.0)
    assert state == "S" and start == 1000.0 + 500 / os.sysconf("SC_CLK_TCK")


def test_probe_of_ourselves_and_of_nobody() -> None:
    me = probe(os.getpid(), Path("/proc"), btime=0.0)
    assert me.presence is Presence.PRESENT and me.start_time is not None
    assert probe(2**22 + 12345, Path("/proc"), btime=0.0).presence is Presence.ABSENT

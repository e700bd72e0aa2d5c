"""What /proc says about pids, and the record of wall-clock steps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.kernel import processes
from ipcjanitor.kernel.processes import (
    _boot_id,
    boot_time,
    clock_offset,
    forward_clock_steps,
    parse_stat,
    probe,
)
from ipcjanitor.model import BASE_REUSE_MARGIN, Presence


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


def test_a_step_before_the_first_run_is_seen_from_systemds_boot_record(tmp_path: Path) -> None:
    # the timer's first run comes after NTP stepped the clock 30 s forward: a record made
    # by that run sees no step, while systemd's record of userspace start does
    assert forward_clock_steps(tmp_path / "a", 1030.0) == 0.0
    assert forward_clock_steps(tmp_path / "b", 1030.0, at_boot=1000.0) == 30.0
    assert forward_clock_steps(tmp_path / "c", 1030.0, at_boot=lambda: 1000.0) == 30.0
    # without systemd's word, the runs' own record still counts; the smaller offset wins
    assert forward_clock_steps(tmp_path / "a", 1040.0, at_boot=lambda: None) == 10.0
    assert forward_clock_steps(tmp_path / "a", 1040.0, at_boot=1035.0) == 10.0


def test_the_clock_history_is_asked_for_only_when_a_live_process_looks_younger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []

    def boot_offset() -> float:
        asked.append(True)
        return clock_offset() - 100.0  # the wall clock was stepped 100 s forward since boot

    monkeypatch.setattr(processes, "state_dir", lambda: tmp_path)  # root's ignores the env
    me = os.getpid()
    started = probe(me, Path("/proc"), boot_time()).start_time
    assert started is not None
    # our own start is older than the object's last activity: no question about reuse
    facts = processes.gather({me: int(started) + 60}, boot_offset=boot_offset)
    assert asked == [] and facts.reuse_margin == BASE_REUSE_MARGIN
    # we look 60 s younger than the object: reuse, unless the clock was stepped since
    facts = processes.gather({me: int(started) - 60}, boot_offset=boot_offset)
    assert asked == [True] and facts.reuse_margin >= BASE_REUSE_MARGIN + 99


@pytest.mark.parametrize(
    ("cgroup_path", "unit"),
    [
        ("/system.slice/billing.service", "billing.service"),
        ("/system.slice/_memory.service", "memory.service"),  # cg_escape: a controller's name
        ("/system.slice/_io.service", "io.service"),
        ("/system.slice/__billing.service", "_billing.service"),  # a leading "_" itself
        ("/system.slice/_.hidden.service", ".hidden.service"),
        ("/system.slice/_cgroup.x.service", "cgroup.x.service"),
    ],
)
def test_escaped_cgroup_names_are_read_as_their_units(
    tmp_path: Path, cgroup_path: str, unit: str
) -> None:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(f"0::{cgroup_path}\n")
    assert processes.unit_of_pid(42, proc) == unit
    assert processes.running_units([unit], proc, frozenset()) == {unit: True}
    assert processes.running_units(["other.service"], proc, frozenset()) == {"other.service": False}

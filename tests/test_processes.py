"""What /proc says about pids, and the record of wall-clock steps."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ipcjanitor.clock import RECORD_NAME, Reading, Record, TimerState, render
from ipcjanitor.errors import IpcJanitorError, NotPermittedError
from ipcjanitor.kernel import clock as kclock
from ipcjanitor.kernel import processes
from ipcjanitor.kernel.processes import boot_time, parse_stat, probe
from ipcjanitor.kernel.procfs import LIVE
from ipcjanitor.model import BASE_REUSE_MARGIN, Presence


def test_parse_stat_handles_spaces_and_parens_in_comm() -> None:
    text = "42 (a (weird) name) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0"
    state, start = parse_stat(text, btime=1000.0)
    assert state == "S" and start == 1000.0 + 500 / os.sysconf("SC_CLK_TCK")


def test_probe_of_ourselves_and_of_nobody() -> None:
    me = probe(os.getpid(), LIVE, btime=0.0)
    assert me.presence is Presence.PRESENT and me.start_time is not None
    assert probe(2**22 + 12345, LIVE, btime=0.0).presence is Presence.ABSENT


def complete_record(directory: Path, stepped: float) -> None:
    """A record of this boot whose first reading is at boot, `stepped` s before today's
    offset, and whose last reading is now: the wall clock was stepped forward since boot."""
    now = kclock.reading()
    first = Reading(mono=0.0, boot=0.0, offset=now.offset - stepped)
    rec = Record(kclock.boot_id(), kclock.time_namespace(), first.offset, (first, now))
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / RECORD_NAME).write_text(render(rec))


def test_the_clock_record_is_read_only_when_a_live_process_looks_younger(tmp_path: Path) -> None:
    asked: list[bool] = []

    def timer() -> tuple[TimerState | None, str | None]:
        asked.append(True)
        return TimerState(active=True, since=0.0, last_trigger=0.0), None

    complete_record(tmp_path / "state", stepped=100.0)
    me = os.getpid()
    started = probe(me, LIVE, boot_time()).start_time
    assert started is not None
    # our own start is older than the object's last activity: no question about reuse
    facts = processes.gather(
        {me: int(started) + 60}, clock_timer=timer, clock_dir=tmp_path / "state"
    )
    assert asked == [] and facts.reuse_margin == BASE_REUSE_MARGIN
    # we look 60 s younger than the object: reuse, unless the clock was stepped since
    facts = processes.gather(
        {me: int(started) - 60}, clock_timer=timer, clock_dir=tmp_path / "state"
    )
    assert asked == [True] and facts.reuse_margin >= BASE_REUSE_MARGIN + 99
    assert facts.clock_covered_from is not None and facts.clock_covered_from <= started
    # no systemd to say the recorder's timer is active: no process is covered
    facts = processes.gather(
        {me: int(started) - 60}, clock_timer=lambda: (None, "no bus"), clock_dir=tmp_path / "state"
    )
    assert facts.clock_covered_from is None and "no bus" in facts.clock_gap
    facts = processes.gather({me: int(started) - 60}, clock_dir=tmp_path / "nothing")
    assert facts.clock_covered_from is None and "clock" in facts.clock_gap


def test_the_recorder_adds_a_reading_to_a_file_only_root_can_replace(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert kclock.record(state, root=os.geteuid() == 0) >= 1
    assert kclock.record(state, root=os.geteuid() == 0) >= 1
    st = (state / RECORD_NAME).stat()
    assert oct(st.st_mode & 0o777) == "0o644" and oct(state.stat().st_mode & 0o777) == "0o700"
    rec = kclock.read_record(state)
    assert isinstance(rec, Record) and len(rec.readings) >= 2
    assert rec.boot_id == kclock.boot_id() and rec.time_ns == kclock.time_namespace()
    assert [p.name for p in state.iterdir()] == [RECORD_NAME]  # no temporary file left


def test_a_record_that_is_not_a_plain_file_is_no_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (tmp_path / "elsewhere").write_text("x")
    (state / RECORD_NAME).symlink_to(tmp_path / "elsewhere")
    why = kclock.read_record(state)
    assert isinstance(why, str) and RECORD_NAME in why
    (state / RECORD_NAME).unlink()
    os.mkfifo(state / RECORD_NAME)  # never blocks on a FIFO
    assert isinstance(kclock.read_record(state), str)
    linked = tmp_path / "linked"
    linked.symlink_to(state)
    assert isinstance(kclock.read_record(linked), str)  # nor through a symlinked directory


def test_a_recorder_that_cannot_write_removes_the_record_it_cannot_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading lost would leave a record that looks complete and misses a step."""
    state = tmp_path / "state"
    kclock.record(state, root=os.geteuid() == 0)

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kclock, "_install", full)
    with pytest.raises(IpcJanitorError, match=r"clock.*No space left on device"):
        kclock.record(state, root=os.geteuid() == 0)
    assert list(state.iterdir()) == []


def test_only_root_records_the_clock_for_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        os.chown(state, 65534, 65534)
        with pytest.raises(NotPermittedError, match="belongs to uid 65534"):
            kclock.record(state, root=True)


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

"""One escaping rule for every text others supply: names, comm, user and cgroup names."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.escape import safe_name
from ipcjanitor.kernel.processes import process_comm, unit_of_pid

HOSTILE = "\x1b[2A\x1b[J\u202eevil\x85"  # cursor up, erase, bidi override, a C1 control


@given(st.text())
def test_escaped_text_is_printable_and_keeps_printable_text(text: str) -> None:
    out = safe_name(text)
    assert out.isprintable()
    if text.isprintable() and "\\" not in text:
        assert out == text


def test_bidi_and_c1_controls_are_escaped() -> None:
    assert safe_name(HOSTILE) == "\\x1b[2A\\x1b[J\\u202eevil\\u0085"


def test_a_real_process_choosing_its_comm_cannot_reach_the_terminal() -> None:
    """`doctor` printed comm raw: `\\e[2A\\e[J` erased its own PROBLEM lines."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, sys, time; libc = ctypes.CDLL(None);"
            " libc.prctl(15, b'\\x1b[2A\\x1b[J\\xe2\\x80\\xae', 0, 0, 0);"
            " print('set', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"set\n"
        deadline = time.monotonic() + 10
        while b"\x1b" not in Path(f"/proc/{child.pid}/comm").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        comm = process_comm(child.pid)
        assert "\x1b" not in comm and comm.isprintable()
        assert comm.startswith("\\x1b[2A\\x1b[J")
    finally:
        child.kill()
        child.wait()


def test_a_cgroup_name_a_delegated_service_chose_is_escaped(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(f"0::/system.slice/app.service/{HOSTILE}.scope\n")
    unit = unit_of_pid(7, tmp_path)
    assert unit is not None and unit.isprintable() and "\x1b" not in unit

"""doctor finds writers stuck on pipes only they hold, however they write (issue 16 item 10).

Real processes, in a private pid namespace, each blocked writing to a full pipe or FIFO.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

POLICY = 'min_age = "0s"\n[owners.test]\nkeys = ["0x10000000-0x1fffffff"]\n'


def run(name: str, tmp_path: Path) -> Any:
    r = in_namespace(name, POLICY, tmp_path, module="pipe_scenarios")
    assert all(r["blocked"].values()), f"a writer never blocked: {r['blocked']}"
    return r


def test_a_writer_thread_that_is_not_the_leader(tmp_path: Path) -> None:
    r = run("thread_writer", tmp_path)
    (pid,) = r["pids"]
    (tid,) = r["blocked"][str(pid)]
    assert tid != pid
    assert r["rc"] == 1, r["stderr"]
    (s,) = r["stuck"]
    assert (s["pid"], s["tid"], s["syscall"], s["reader"]) == (pid, tid, "write", "self")
    assert s["holds_read_end"] and s["read_fds"] and s["target"].startswith("pipe:[")


def test_a_fifo_opened_read_write_by_its_writer(tmp_path: Path) -> None:
    r = run("fifo_writers", tmp_path)
    stuck_pid, _reader, _healthy = r["pids"]
    assert r["rc"] == 1, r["stderr"]
    (s,) = r["stuck"]  # the O_WRONLY writer has a reader in another process: healthy
    assert s["pid"] == stuck_pid and s["target"] == r["own"]
    assert s["reader"] == "self" and s["holds_read_end"] and s["read_fds"] == [s["fds"][0]]


def test_splice_vmsplice_and_tee_writers(tmp_path: Path) -> None:
    r = run("splice_writers", tmp_path)
    assert r["rc"] == 1, r["stderr"]
    by_pid = {s["pid"]: s for s in r["stuck"]}
    assert [by_pid[p]["syscall"] for p in r["pids"] if p in by_pid] == ["splice", "vmsplice", "tee"]
    assert all(s["reader"] == "self" and s["holds_read_end"] for s in r["stuck"])


def test_a_reader_doctor_may_not_see_makes_the_finding_unknown(tmp_path: Path) -> None:
    r = run("unreadable_holder", tmp_path)
    assert r["root_rc"] == 0 and r["root_stuck"] == []  # root sees the reader: healthy
    (s,) = r["stuck"]
    assert s["pid"] == r["writer"]
    assert s["reader"] == "unknown" and not s["holds_read_end"]
    assert r["holder"] in s["unreadable"]
    assert r["rc"] == 0, "an unknown finding is not a problem found"


def test_an_i386_writer(tmp_path: Path) -> None:
    r = run("i386_writer", tmp_path)
    assert r["syscall"][:2] == ["4", "0x1"], "i386 write(1, ...) as a 32-bit task shows it"
    assert r["rc"] == 1, r["stderr"]
    (s,) = r["stuck"]
    assert (s["pid"], s["syscall"], s["fds"][0], s["reader"]) == (r["pids"][0], "write", 1, "self")

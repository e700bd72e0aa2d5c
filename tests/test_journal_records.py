"""The shape of each kind of journal record: its MESSAGE_ID, PRIORITY and IPCJANITOR_* fields,
read back from a real datagram socket in the journal's native protocol (one record per fact)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipcjanitor.engine.run import Scope
from ipcjanitor.hook import run as hookrun
from ipcjanitor.hook.gate import HookCall
from ipcjanitor.model import Verdict
from ipcjanitor.output import journal
from ipcjanitor.output.journal import Journal

from .test_golden import DECISIONS
from .test_posix_output import decision as posix_decision

COMMON = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"}
SYSV = {"IPCJANITOR_KIND", "IPCJANITOR_KEY", "IPCJANITOR_ID", "IPCJANITOR_OWNER",
        "IPCJANITOR_UID", "IPCJANITOR_PIDS", "IPCJANITOR_VERDICT", "IPCJANITOR_REASON"}  # fmt: skip
POSIX = {"IPCJANITOR_KIND", "IPCJANITOR_NAME", "IPCJANITOR_DEV", "IPCJANITOR_INODE",
         "IPCJANITOR_OWNER", "IPCJANITOR_UID", "IPCJANITOR_VERDICT", "IPCJANITOR_REASON"}  # fmt: skip


def decode(datagram: bytes) -> dict[str, str]:
    """The native protocol back into fields: KEY=VALUE, or KEY\\n<le64 length>VALUE\\n."""
    out: dict[str, str] = {}
    pos = 0
    key: bytes
    while pos < len(datagram):
        nl = datagram.index(b"\n", pos)
        line = datagram[pos:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = nl + 1
        else:
            key = line
            size = int.from_bytes(datagram[nl + 1 : nl + 9], "little")
            value = datagram[nl + 9 : nl + 9 + size]
            assert datagram[nl + 9 + size : nl + 10 + size] == b"\n"
            pos = nl + 10 + size
        assert key.decode() not in out, f"{key!r} twice"
        out[key.decode()] = value.decode()
    return out


class Sink:
    """A datagram socket standing in for journald's; records() reads what arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def journal(self, unit: str | None = None) -> Journal:
        j = Journal(unit=unit, to_journal=True)
        j.socket_path = self.path
        return j

    def records(self) -> list[dict[str, str]]:
        got = []
        while True:
            try:
                got.append(decode(self.sock.recv(1 << 20)))
            except BlockingIOError:
                return got


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path / "journal.sock")
    yield s
    s.sock.close()


@pytest.mark.parametrize(
    ("verdict", "message_id", "priority"),
    [
        (Verdict.REMOVED, journal.MESSAGE_ID_REMOVED, "5"),
        (Verdict.FAILED, journal.MESSAGE_ID_FAILED, "3"),
        (Verdict.CHANGED, journal.MESSAGE_ID_CHANGED, "5"),
        (Verdict.UNKNOWN, journal.MESSAGE_ID_DOUBT, "4"),
    ],
)
def test_a_sysv_event_is_one_record_with_its_id_priority_and_the_objects_fields(
    sink: Sink, verdict: Verdict, message_id: str, priority: str
) -> None:
    j = sink.journal(unit="app.service")
    d = DECISIONS[-1]._replace(verdict=verdict)
    j.decision(d)
    j.close()
    (r,) = sink.records()
    assert set(r) == COMMON | SYSV | {"MESSAGE_ID", "IPCJANITOR_UNIT", "OBJECT_SYSTEMD_UNIT"}
    assert r["MESSAGE_ID"] == message_id and r["PRIORITY"] == priority
    assert r["IPCJANITOR_VERDICT"] == verdict.value and r["IPCJANITOR_KEY"] == "0x7a000003"
    assert r["IPCJANITOR_UNIT"] == r["OBJECT_SYSTEMD_UNIT"] == "app.service"
    assert r["SYSLOG_IDENTIFIER"] == "ipcjanitor"
    assert r["MESSAGE"] == f"{verdict.value} shm 6 (key 0x7a000003) of queue: {d.reason}"


def test_a_manual_clean_record_names_no_unit(sink: Sink) -> None:
    j = sink.journal()
    j.decision(DECISIONS[-1])
    j.close()
    (r,) = sink.records()
    assert set(r) == COMMON | SYSV | {"MESSAGE_ID"}


@pytest.mark.parametrize(
    ("verdict", "message_id"),
    [(Verdict.REMOVED, journal.MESSAGE_ID_REMOVED), (Verdict.UNKNOWN, journal.MESSAGE_ID_DOUBT)],
)
def test_a_posix_event_names_the_file_and_inode(
    sink: Sink, verdict: Verdict, message_id: str
) -> None:
    j = sink.journal(unit="app.service")
    j.posix_decision(posix_decision("psm_1")._replace(verdict=verdict))
    j.close()
    (r,) = sink.records()
    assert set(r) == COMMON | POSIX | {"MESSAGE_ID", "IPCJANITOR_UNIT", "OBJECT_SYSTEMD_UNIT"}
    assert r["MESSAGE_ID"] == message_id and r["IPCJANITOR_NAME"] == "psm_1"
    assert r["IPCJANITOR_INODE"] == "4242" and r["IPCJANITOR_DEV"] == "0:26"


def test_verdicts_that_are_no_event_are_not_journaled() -> None:
    assert {Verdict.REMOVED, Verdict.FAILED, Verdict.CHANGED, Verdict.UNKNOWN} == journal.RECORDED


def test_a_policy_error_is_one_record_at_err(sink: Sink) -> None:
    j = sink.journal()
    assert j.policy_error("policy error, nothing was removed: /etc/p.toml:3: bad key") is True
    j.close()
    (r,) = sink.records()
    assert r == {
        "MESSAGE": "policy error, nothing was removed: /etc/p.toml:3: bad key",
        "PRIORITY": "3",
        "SYSLOG_IDENTIFIER": "ipcjanitor",
        "MESSAGE_ID": journal.MESSAGE_ID_POLICY_ERROR,
    }


def test_the_hooks_gave_up_record(sink: Sink, capsys: pytest.CaptureFixture[str]) -> None:
    j = sink.journal(unit="app.service")
    call = HookCall("app.service", None, False, None, False)
    busy = TimeoutError("the run lock is held by pid 7")
    scope = Scope(owners=frozenset({"b", "a"}))
    assert hookrun._gave_up("app.service", busy, call, scope=scope, journal=j, notes=[]) == 0
    (r,) = sink.records()
    assert set(r) == COMMON | {"MESSAGE_ID", "IPCJANITOR_UNIT", "IPCJANITOR_OWNER",
                               "OBJECT_SYSTEMD_UNIT"}  # fmt: skip
    assert r["MESSAGE_ID"] == journal.MESSAGE_ID_GAVE_UP and r["PRIORITY"] == "4"
    assert r["IPCJANITOR_OWNER"] == "a b" and "the run lock is held by pid 7" in r["MESSAGE"]


def test_the_handoff_gap_record(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipcjanitor import cli
    from ipcjanitor.engine import run as janitor

    policy = tmp_path / "p.toml"
    policy.write_text('[owners.u]\nkeys = ["0x7a000000"]\nmin_age = "0s"\n')
    j = sink.journal()
    monkeypatch.setattr(journal.Journal, "for_clean", classmethod(lambda cls, echo: j))
    # no object is touched: the engine's clean is replaced, only the records are looked at
    monkeypatch.setattr(janitor, "clean", lambda *a, **k: ([], None))
    assert cli.main(["--policy", str(policy), "clean", "-q"]) == 0
    (r,) = sink.records()
    assert set(r) == COMMON | {"MESSAGE_ID", "IPCJANITOR_EVENT"}
    assert r["MESSAGE_ID"] == journal.MESSAGE_ID_HANDOFF_GAP and r["PRIORITY"] == "4"
    assert r["MESSAGE"].startswith("owner u (") and "has no unit and min_age 0:" in r["MESSAGE"]


@pytest.mark.parametrize("stderr_is_journal", [False, True], ids=["terminal", "journal"])
def test_clean_v_journals_the_handoff_gap_once_too(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], stderr_is_journal: bool,
) -> None:  # fmt: skip
    """Issue 22.1 under -v: the run's one handoff-gap record (MESSAGE_ID) is sent as without
    -v; its stderr line is printed only where stderr is not the journal (under systemd it
    would be a second record of the same fact, without MESSAGE_ID)."""
    from ipcjanitor import cli
    from ipcjanitor.commands import table
    from ipcjanitor.engine import run as janitor

    policy = tmp_path / "p.toml"
    policy.write_text('[owners.u]\nkeys = ["0x7a000000"]\nmin_age = "0s"\n')
    j = sink.journal()
    monkeypatch.setattr(journal.Journal, "for_clean", classmethod(lambda cls, echo: j))
    monkeypatch.setattr(table, "stream_is_journal", lambda fd: stderr_is_journal)
    monkeypatch.setattr(janitor, "clean", lambda *a, **k: ([], None))  # no object touched
    assert cli.main(["--policy", str(policy), "clean", "-v"]) == 0
    gaps = [r for r in sink.records() if r.get("IPCJANITOR_EVENT") == "handoff-gap"]
    assert len(gaps) == 1 and gaps[0]["MESSAGE_ID"] == journal.MESSAGE_ID_HANDOFF_GAP
    err = capsys.readouterr().err
    assert err.count("an object handed off") == (0 if stderr_is_journal else 1), err
    assert "has no unit: only the pids" in err  # -v's other warnings stay on stderr


def test_clean_dry_run_v_says_the_handoff_gap_on_stderr_even_under_systemd(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A dry run sends no record: its -v line is the only place the gap is said."""
    from ipcjanitor import cli
    from ipcjanitor.commands import table

    policy = tmp_path / "p.toml"
    policy.write_text('[owners.u]\nkeys = ["0x7a000000"]\nmin_age = "0s"\n')
    j = sink.journal()
    monkeypatch.setattr(journal.Journal, "for_clean", classmethod(lambda cls, echo: j))
    monkeypatch.setattr(table, "stream_is_journal", lambda fd: True)
    monkeypatch.setattr(table, "survey", lambda *a, **k: [])
    assert cli.main(["--policy", str(policy), "clean", "--dry-run", "-v"]) == 0
    assert sink.records() == []
    assert capsys.readouterr().err.count("an object handed off") == 1


def test_a_record_larger_than_a_datagram_goes_whole_through_a_memfd(sink: Sink) -> None:
    sink.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    j = sink.journal()
    j._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    j._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # datagrams past it: EMSGSIZE
    big = DECISIONS[-1]._replace(reason="x" * 300_000)
    j.decision(big)
    msg, fds, _flags, _addr = socket.recv_fds(sink.sock, 1 << 16, 1)
    assert msg == b"" and len(fds) == 1
    try:  # journald maps it; the sender's write left the shared offset at the end
        size = os.fstat(fds[0]).st_size
        r = decode(os.pread(fds[0], size, 0))
        with pytest.raises(PermissionError):  # sealed: nobody changes it after the send
            os.pwrite(fds[0], b"y", 0)
    finally:
        os.close(fds[0])
    j.close()
    assert r["IPCJANITOR_REASON"] == "x" * 300_000 and r["MESSAGE_ID"] == journal.MESSAGE_ID_REMOVED
    assert len(r["MESSAGE"]) > 300_000 and sink.records() == []

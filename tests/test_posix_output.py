"""POSIX output: hostile names are safe on a terminal and valid JSON; the records' fields."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ipcjanitor.escape import safe_name
from ipcjanitor.model import PosixDecision, PosixKind, PosixObject, Verdict
from ipcjanitor.output import report
from ipcjanitor.output.journal import Journal


def decision(name: str, kind: PosixKind = PosixKind.SHM) -> PosixDecision:
    o = PosixObject(kind, name, os.makedev(0, 26), 4242, 33, 33, 0o100600, 4096, 1,
                    10**18, 10**18, 10**18, (("", 1, 1),), name, qnum=2 if kind is PosixKind.MQ else None)  # fmt: skip
    return PosixDecision(o, "py", Verdict.REMOVED, f"judged {name}", ("fd 3 of pid 9 (x)",))


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("psm_1", "psm_1"),
        ("a\nb", "a\\x0ab"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("back\\slash", "back\\\\slash"),
        (os.fsdecode(b"bad\xff\xfe"), "bad\\xff\\xfe"),
        ("del\x7f", "del\\x7f"),
        ("\u202eevil", "\\u202eevil"),  # right-to-left override: not printable
        ("café", "café"),
    ],
)
def test_names_are_made_safe(name: str, shown: str) -> None:
    assert safe_name(name) == shown
    assert safe_name(name).isprintable()


def test_the_table_and_json_carry_no_raw_control_byte() -> None:
    ds = [decision("a\nb\x1b[2J"), decision(os.fsdecode(b"q\xff"), PosixKind.MQ)]
    text = report.posix_table(ds)
    assert "\x1b" not in text and len(text.splitlines()) == 3
    head, _, mq = text.splitlines()
    assert mq.split()[head.split().index("MSGS")] == "2"  # messages in their own column
    doc = report.document([], None, ds)
    doc.encode("utf-8")  # no lone surrogate survives: strictly valid UTF-8 JSON
    objs = json.loads(doc)["objects"]
    assert objs[0] | {"times": None} == {
        "kind": "posix-shm", "name": "a\\x0ab\\x1b[2J", "dev": "0:26", "inode": 4242,
        "owner": "py", "uid": 33, "gid": 33, "perms": "0600", "size": 4096, "nlink": 1,
        "times": None, "holders": ["fd 3 of pid 9 (x)"], "verdict": "removed",
        "reason": "judged a\\x0ab\\x1b[2J",
    }  # fmt: skip
    assert objs[0]["times"]["mtime"] == "2001-09-09T01:46:40Z"
    assert objs[1]["qnum"] == 2 and objs[1]["name"] == "q\\xff"
    assert json.loads(doc)["summary"]["by_verdict"]["removed"] == 2


def test_journal_records_name_and_inode(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str, list[tuple[str, object]]]] = []
    j = Journal(unit="app.service", to_journal=True)
    monkeypatch.setattr(j, "send", lambda m, p, f=(): sent.append((m, p, list(f))))
    j.posix_decision(decision("psm\n1"))
    message, prio, fields = sent[0]
    assert message == "removed posix-shm psm\\x0a1 (inode 4242) of py: judged psm\\x0a1"
    got = dict(fields)
    assert got["IPCJANITOR_NAME"] == "psm\\x0a1" and got["IPCJANITOR_INODE"] == 4242
    assert got["IPCJANITOR_KIND"] == "posix-shm" and got["IPCJANITOR_UNIT"] == "app.service"
    assert prio == "notice"


def test_metrics_per_posix_kind(tmp_path: Path) -> None:
    from ipcjanitor.output import metrics

    out = tmp_path / "m.prom"
    ds = [decision("a"), decision("b"), decision("q", PosixKind.MQ)]
    ds[1] = ds[1]._replace(verdict=Verdict.FAILED)
    metrics.write(str(out), [], 0.0, 1.0, ds, run=metrics.Run("clean", ""))
    text = out.read_text()
    assert 'ipcjanitor_removed_objects_total{source="clean",unit="",kind="posix-shm"} 1.0' in text
    assert 'ipcjanitor_removed_objects_total{source="clean",unit="",kind="posix-mq"} 1.0' in text
    assert 'ipcjanitor_failed_removals{source="clean",unit="",kind="posix-shm"} 1.0' in text
    assert (
        'ipcjanitor_objects{source="clean",unit="",kind="posix-sem",verdict="removed"} 0.0' in text
    )
    assert 'ipcjanitor_last_success_timestamp_seconds{source="clean",unit=""} 0.0' in text

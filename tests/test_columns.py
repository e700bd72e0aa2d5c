"""One column description (output/columns.py) behind the table, --raw, --json and the journal."""

from __future__ import annotations

from typing import Any

import pytest

from ipcjanitor.commands import limits
from ipcjanitor.model import Verdict
from ipcjanitor.output import columns, report
from ipcjanitor.output.columns import Column, Style
from ipcjanitor.output.journal import Journal

from .test_golden import DECISIONS

ROWS = [("a", 1, "short"), ("bb", 22, "a much longer reason than fits")]
COLS: tuple[Column[tuple[str, int, str]], ...] = (
    Column("NAME", "a name", lambda r, s: r[0], "name", lambda r: r[0], "X_NAME"),
    Column("N", "a number", lambda r, s: str(r[1]), "n", lambda r: r[1], right=True),
    Column("WHY", "a reason", lambda r, s: r[2], "why", lambda r: r[2], "X_WHY", flex=True),
)


def test_the_table_aligns_and_the_flexible_column_fits_the_width() -> None:
    assert columns.render(ROWS, COLS) == (
        "NAME   N  WHY\na      1  short\nbb    22  a much longer reason than fits"
    )
    narrow = columns.render(ROWS, COLS, Style(width=20, ellipsis="..."))
    assert narrow.splitlines()[2] == "bb    22  a much ..." and all(
        len(line) <= 20 for line in narrow.splitlines()
    )


def test_raw_is_one_word_per_cell_and_noheadings_drops_the_header() -> None:
    raw = columns.render(ROWS, COLS, Style(raw=True, headings=False))
    assert raw.splitlines()[1] == "bb 22 a\\x20much\\x20longer\\x20reason\\x20than\\x20fits"
    assert len(raw.splitlines()) == 2


def test_json_and_journal_walk_the_same_columns() -> None:
    assert columns.as_json(ROWS[0], COLS) == {"name": "a", "n": 1, "why": "short"}
    assert columns.fields(ROWS[0], COLS) == [("X_NAME", "a"), ("X_WHY", "short")]


def test_output_picks_replaces_or_appends_and_names_an_unknown_column() -> None:
    assert [c.name for c in columns.choose(COLS, ("NAME",), "+why")] == ["NAME", "WHY"]
    assert [c.name for c in columns.choose(COLS, ("NAME",), "n,name")] == ["N", "NAME"]
    with pytest.raises(ValueError, match=r"unknown column: bogus \(columns: NAME, N, WHY\)"):
        columns.choose(COLS, ("NAME",), "bogus")


def test_human_sizes_as_lsipc() -> None:
    got = [columns.human_size(n) for n in (0, 512, 4096, 1048576, 1572864, 10**12)]
    assert got == ["0B", "512B", "4K", "1M", "1.5M", "931.3G"]


def test_every_json_key_and_journal_field_of_an_object_is_a_column() -> None:
    json_keys = {c.json for c in report.COLUMNS if c.json}
    for d in DECISIONS:
        assert set(report.object_json(d)) <= json_keys
    sent: list[list[tuple[str, object]]] = []
    j = Journal(unit="a.service", to_journal=True)
    j.send = lambda m, p, f=(): sent.append(list(f))  # type: ignore[method-assign,assignment]
    removed = next(d for d in DECISIONS if d.verdict is Verdict.REMOVED)
    j.decision(removed)
    fields = dict(sent[0])
    want = {c.field for c in report.COLUMNS if c.field} | {"MESSAGE_ID", "IPCJANITOR_UNIT"}
    assert set(fields) == want
    assert fields["IPCJANITOR_OWNER"] == "queue" and fields["IPCJANITOR_KEY"] == "0x7a000003"


def test_doctor_limits_json_walks_its_columns() -> None:
    row = limits.LimitRow("shm", "objects", "kernel.shmmni", 9, 10, 4)
    assert columns.as_json(row, limits.LIMIT_COLUMNS) == {
        "kind": "shm", "measure": "objects", "used": 9, "max": 10, "percent": 90.0,
        "stale": 4, "limit": "kernel.shmmni", "problem": True,
    }  # fmt: skip


def test_help_lists_every_column_with_what_it_holds() -> None:
    text = columns.describe(report.COLUMNS)
    for c in report.COLUMNS:
        if c.listed:
            assert f"  {c.name} " in text and c.help in text
    assert "TIMES" not in text


def test_the_ownership_columns_are_one_set_for_system_v_and_posix() -> None:
    """POLICY, OWNER, UID and GID are the same four rows in both tables (one description)."""
    from .test_posix_output import decision

    names = ("POLICY", "OWNER", "UID", "GID")
    sysv: dict[str, Column[Any]] = {c.name: c for c in report.COLUMNS}
    posix: dict[str, Column[Any]] = {c.name: c for c in report.POSIX_COLUMNS}
    assert all(sysv[n] is posix[n] for n in names)
    d, p = DECISIONS[3], decision("psm_1")  # unowned (None) and owned by "py"
    assert [sysv[n].text(d, Style()) for n in names] == ["-", "4242", "4242", "4242"]
    assert [posix[n].text(p, Style()) for n in names][::2] == ["py", "33"]
    assert columns.as_json(p, [posix[n] for n in names]) == {"owner": "py", "uid": 33, "gid": 33}
    assert columns.fields(d, [sysv[n] for n in names]) == [
        ("IPCJANITOR_OWNER", ""), ("IPCJANITOR_UID", 4242)]  # fmt: skip

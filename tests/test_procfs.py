"""The /proc/sysvipc parser: captured tables, columns by header name, malformed input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.errors import ProcfsFormatError
from ipcjanitor.kernel.sysvipc import parse_table
from ipcjanitor.model import IpcKind, IpcObject

SHM = """       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
 -74491771          0   644                  4096  1892  1900      1    33    33    33    33 1795337441 1795337442 1795337440                     0                     0
         0      32769  1600                 65536    12     0      0  4242  4242  4242  4242          0          0 1795337000                     0                     0
"""
SEM = """       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
-764189753          0   600          3     0     0     0     0          0 1795337440
"""
MSG = """       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
1627711627          7   660          40          2   501   502     0     0     0     0 1795337450 1795337451 1795337440
"""


def test_shm_table() -> None:
    a, b = parse_table(IpcKind.SHM, SHM)
    assert a.key == 0xFB8F5885 and a.id == 0 and a.mode == 0o644 and a.size == 4096
    assert [(r.role, r.pid) for r in a.pids] == [("creator", 1892), ("last shmat/shmdt", 1900)]
    assert a.nattch == 1 and (a.uid, a.cuid) == (33, 33)
    assert a.ctime == 1795337440 and a.last_activity == 1795337442
    assert b.key == 0 and b.id == 32769 and b.mode == 0o1600 and b.last_activity == 1795337000


def test_sem_and_msg_tables() -> None:
    (sem,) = parse_table(IpcKind.SEM, SEM)
    assert sem.key == 0xD27363C7 and sem.nsems == 3 and sem.pids == () and sem.nattch is None
    (msg,) = parse_table(IpcKind.MSG, MSG)
    assert msg.key == 0x6104E88B and msg.qnum == 2 and msg.qbytes == 40
    assert [r.pid for r in msg.pids] == [501, 502] and msg.last_activity == 1795337451


def test_columns_are_found_by_name_not_position() -> None:
    lines = MSG.splitlines()
    header, row = lines[0].split(), lines[1].split()
    order = list(reversed(range(len(header))))
    text = " ".join(header[i] for i in order) + "\n" + " ".join(row[i] for i in order) + "\n"
    assert parse_table(IpcKind.MSG, text) == parse_table(IpcKind.MSG, MSG)


def test_extra_new_columns_are_ignored() -> None:
    lines = SEM.splitlines()
    text = lines[0] + "  future\n" + lines[1] + "  7\n"
    assert parse_table(IpcKind.SEM, text) == parse_table(IpcKind.SEM, SEM)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("key semid perms\n1 2 3\n", "header lacks"),
        (SEM + "12 3\n", "3: 2 fields"),
        (SEM.replace(" 600 ", " 6x0 "), "not a number"),
    ],
)
def test_malformed_tables_say_where(text: str, fragment: str) -> None:
    with pytest.raises(ProcfsFormatError, match=fragment):
        parse_table(IpcKind.SEM, text)


def test_empty_table() -> None:
    assert parse_table(IpcKind.SHM, "") == []
    assert parse_table(IpcKind.SHM, SHM.splitlines()[0] + "\n") == []


ints = st.integers(min_value=0, max_value=2**31 - 1)


@given(
    st.lists(
        st.tuples(st.integers(-(2**31), 2**31 - 1), ints, st.integers(0, 0o7777), ints, ints),
        max_size=20,
    )
)
def test_rendered_rows_parse_back(rows: list[tuple[int, int, int, int, int]]) -> None:
    header = "key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime"
    lines = [header] + [f"{k} {i} {m:o} {c} {q} 1 2 3 4 5 6 7 8 9" for k, i, m, c, q in rows]
    parsed = parse_table(IpcKind.MSG, "\n".join(lines))
    assert [(o.key, o.id, o.mode, o.qbytes, o.qnum) for o in parsed] == [
        (k & 0xFFFFFFFF, i, m, c, q) for k, i, m, c, q in rows
    ]


@given(st.text(max_size=300))
def test_garbage_never_escapes_as_anything_but_a_format_error(text: str) -> None:
    with contextlib.suppress(ProcfsFormatError):
        parse_table(IpcKind.SHM, text)


REAL_HEADERS = [SHM.splitlines()[0], SEM.splitlines()[0], MSG.splitlines()[0]]
cell = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "-", "0x10", "1e3", "\u0661", "nan", "644", "-0"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=4),
)


@given(
    st.sampled_from(list(IpcKind)),
    st.sampled_from(REAL_HEADERS),
    st.lists(st.lists(cell, min_size=9, max_size=18).map(" ".join), max_size=4),
)
def test_rows_under_a_real_header_parse_or_say_where(
    kind: IpcKind, header: str, rows: list[str]
) -> None:
    """Seeded with a real header, the fuzzer reaches the row parser, not just the header check."""
    try:
        parsed = parse_table(kind, "\n".join([header, *rows]) + "\n", "t")
    except ProcfsFormatError as exc:
        assert str(exc).startswith("t:")
    else:
        assert len(parsed) == len([r for r in rows if r.strip()])


ints = st.integers(0, 2**31 - 1)


@given(st.tuples(*[ints] * 13))
def test_each_builder_puts_every_field_where_its_name_says(t: tuple[int, ...]) -> None:
    """The builders construct records positionally (fast): every field must land by name."""
    from ipcjanitor.kernel.sysvipc import STAT_FIELDS, msg_object, sem_object, shm_object

    shm = dict(zip(STAT_FIELDS[IpcKind.SHM], t, strict=True))
    o = shm_object(7, t)
    assert (o.kind, o.id, o.key, o.uid, o.gid, o.cuid, o.cgid, o.mode) == (
        IpcKind.SHM, 7, shm["key"], shm["uid"], shm["gid"], shm["cuid"], shm["cgid"], shm["perms"])  # fmt: skip
    assert (o.size, o.nattch, o.raw, o.unreadable, o.values) == (
        shm["size"],
        shm["nattch"],
        t,
        None,
        (),
    )
    assert [r.pid for r in o.pids] == [shm["cpid"], shm["lpid"]]
    assert o.times == (("atime", shm["atime"]), ("dtime", shm["dtime"]), ("ctime", shm["ctime"]))
    assert o.last_activity == max(v for _, v in o.times) and o.ctime == shm["ctime"]
    msg = dict(zip(STAT_FIELDS[IpcKind.MSG], t, strict=True))
    m = msg_object(8, t)
    assert (m.kind, m.key, m.mode, m.qnum, m.qbytes, m.nattch) == (
        IpcKind.MSG, msg["key"], msg["perms"], msg["qnum"], msg["cbytes"], None)  # fmt: skip
    assert [r.pid for r in m.pids] == [msg["lspid"], msg["lrpid"]]
    assert m.last_activity == max(msg["stime"], msg["rtime"], msg["ctime"])
    sem_t = (*t[:9], (t[9], t[10]), (t[11], 0), (0, t[12]), (1, 0))
    s = sem_object(9, sem_t)
    assert (s.kind, s.key, s.nsems, s.ncnt, s.zcnt, s.values, s.nattch, s.size) == (
        IpcKind.SEM, t[0], t[6], t[11], t[12], (1, 0), None, 0)  # fmt: skip
    assert [(r.pid, r.traced) for r in s.pids] == [(t[9], True), (t[10], False)]
    assert s.last_activity == max(t[7], t[8]) and s.raw == sem_t


CORPUS = Path(__file__).parent / "data" / "sysvipc"
LAYOUTS = sorted(p for p in CORPUS.iterdir() if p.is_dir())


def _as_expected(o: IpcObject) -> dict[str, object]:
    """The fields expected.json names, in its notation (keys hex, modes octal)."""
    fields = {
        IpcKind.SHM: ("size", "nattch"),
        IpcKind.SEM: ("nsems",),
        IpcKind.MSG: ("qnum", "qbytes"),
    }[o.kind]
    return {
        "key": f"0x{o.key:08x}",
        "id": o.id,
        "mode": f"{o.mode:o}",
        **{f: getattr(o, f) for f in fields},
        "uid": o.uid,
        "gid": o.gid,
        "cuid": o.cuid,
        "cgid": o.cgid,
        "pids": [[r.role, r.pid] for r in o.pids],
        "times": dict(o.times),
        "last_activity": o.last_activity,
    }


@pytest.mark.parametrize("layout", LAYOUTS, ids=[p.name for p in LAYOUTS])
def test_every_captured_layout_parses_as_expected(layout: Path) -> None:
    expected = json.loads((layout / "expected.json").read_text())
    assert expected and set(expected) == {p.name for p in layout.iterdir()} - {"expected.json"}
    for name, objects in expected.items():
        parsed = parse_table(IpcKind(name), (layout / name).read_text(), str(layout / name))
        assert [_as_expected(o) for o in parsed] == objects


def test_the_corpus_has_more_than_one_layout() -> None:
    assert len(LAYOUTS) >= 2 and all((p / "expected.json").exists() for p in LAYOUTS)

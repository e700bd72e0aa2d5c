"""One description of every column, and the renderings that walk it (util-linux lsipc's
`coldescs[]`, style-review example 8).

A Column says what it holds (`help`, shown by `--help` and ipcjanitor(8)), how its text cell
reads (aligned table or `--raw`), and under which key it goes into `--json` and which field
into the journal. The scan table, `--json`, doctor's limits table and the journal's records
are walks over tuples of Columns: a new field is one row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

R = TypeVar("R")
# A Column only takes rows in, so a column of a wider row (a Protocol both kinds of decision
# satisfy) serves in a table of narrower ones: report.py's ownership columns.
R_contra = TypeVar("R_contra", contravariant=True)


class _Absent:
    """A JSON value a row does not have (a key left out, not null): nsems of a segment."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class Style(NamedTuple):
    """How text cells are written (the options of scan, clean and doctor)."""

    raw: bool = False  # --raw: one line per row, cells separated by one space, escaped
    bytes: bool = False  # --bytes: sizes in bytes, not 1M
    headings: bool = True  # --noheadings / --no-legend turn it off
    width: int | None = None  # truncate the flexible column to this line width (a terminal)
    colour: bool = False  # only on a terminal, never with NO_COLOR or TERM=dumb
    ellipsis: str = "…"


PLAIN = Style()


class Column(NamedTuple, Generic[R_contra]):
    """One column: its name (for `-o` and the header), what it holds, and its renderings."""

    name: str
    help: str
    text: Callable[[R_contra, Style], str]  # the cell in the table and in --raw
    json: str | None = None  # its key in the --json object, if any
    value: Callable[[R_contra], Any] | None = None  # the JSON value (ABSENT: no key for this row)
    field: str | None = None  # its journal field, if any
    record: Callable[[R_contra], object] | None = None  # the field's value (default: value)
    right: bool = False  # numbers are aligned right
    flex: bool = False  # truncated to the terminal's width (REASON)
    listed: bool = True  # offered by -o; False: a JSON or journal rendering only
    paint: Callable[[R_contra], str | None] | None = None  # an SGR colour for the cell, or None

    @property
    def header(self) -> str:
        return self.name


def pick(columns: Sequence[Column[R]], names: Iterable[str]) -> tuple[Column[R], ...]:
    """The columns named (case-insensitive) in that order; ValueError names an unknown one."""
    by_name = {c.name: c for c in columns if c.listed}
    out = []
    for name in names:
        column = by_name.get(name.strip().upper())
        if column is None:
            raise ValueError(f"unknown column: {name.strip()} (columns: {', '.join(by_name)})")
        out.append(column)
    return tuple(out)


def choose(
    columns: Sequence[Column[R]], default: Sequence[str], spec: str | None
) -> tuple[Column[R], ...]:
    """`-o` as lsipc reads it: "A,B" replaces the default list, "+A,B" appends to it."""
    if not spec:
        return pick(columns, default)
    if spec.startswith("+"):
        return pick(columns, [*default, *spec[1:].split(",")])
    return pick(columns, spec.split(","))


def raw_escape(text: str) -> str:
    """A --raw cell: one word, whitespace and backslashes as \\xNN (libsmartcols' raw mode);
    an empty cell reads "-"."""
    if not text:
        return "-"
    if not any(c.isspace() or c == "\\" for c in text):
        return text
    return "".join(f"\\x{ord(c):02x}" if c.isspace() or c == "\\" else c for c in text)


def render(rows: Sequence[R], columns: Sequence[Column[R]], style: Style = PLAIN) -> str:
    """The table: a header (unless style.headings is off), one line per row. Columns are
    two spaces apart, the last one unpadded; in --raw one space apart and escaped. Only
    listed columns show (the others are JSON's or the journal's)."""
    columns = [c for c in columns if c.listed]
    cells = [[c.text(r, style) for c in columns] for r in rows]
    if style.raw:
        lines = [[c.header for c in columns]] if style.headings else []
        return "\n".join(" ".join(raw_escape(x) for x in line) for line in [*lines, *cells])
    head = [c.header for c in columns]
    widths = [max([len(head[i]), *(len(line[i]) for line in cells)]) for i in range(len(columns))]
    widths = _fit(columns, widths, style)
    out = []
    if style.headings:
        out.append(_line(columns, head, widths, style, None))
    out.extend(_line(columns, line, widths, style, r) for line, r in zip(cells, rows, strict=True))
    return "\n".join(out)


def _fit(columns: Sequence[Column[R]], widths: list[int], style: Style) -> list[int]:
    """The flexible column shrunk so that a line fits style.width (never below its header)."""
    if style.width is None:
        return widths
    for i, c in enumerate(columns):
        if c.flex:
            others = sum(w + 2 for j, w in enumerate(widths) if j != i)
            widths[i] = max(len(c.header), min(widths[i], style.width - others))
    return widths


def _line(
    columns: Sequence[Column[R]], cells: list[str], widths: list[int], style: Style, row: R | None
) -> str:
    parts = []
    last = len(columns) - 1
    for i, (c, cell, w) in enumerate(zip(columns, cells, widths, strict=True)):
        text = cell  # only a flexible column is ever narrower than its text:
        if len(text) > w:
            text = text[: max(w - len(style.ellipsis), 0)] + style.ellipsis
        padded = text.rjust(w) if c.right else text if i == last else text.ljust(w)
        colour = c.paint(row) if style.colour and row is not None and c.paint else None
        parts.append(f"\x1b[{colour}m{padded}\x1b[0m" if colour else padded)
    return "  ".join(parts).rstrip() if row is None else "  ".join(parts)


def as_json(row: R, columns: Iterable[Column[R]]) -> dict[str, Any]:
    """The row's JSON object: each column with a key, in the columns' order."""
    out: dict[str, Any] = {}
    for c in columns:
        if c.json is not None and c.value is not None:
            v = c.value(row)
            if v is not ABSENT:
                out[c.json] = v
    return out


def fields(row: R, columns: Iterable[Column[R]]) -> list[tuple[str, object]]:
    """The row's journal fields: each column with a field, in the columns' order."""
    out: list[tuple[str, object]] = []
    for c in columns:
        if c.field is None:
            continue
        get = c.record or c.value
        v = get(row) if get is not None else c.text(row, RECORD)
        if v is not ABSENT:
            out.append((c.field, "" if v is None else v))
    return out


RECORD = Style(raw=False, bytes=True)  # a journal field's text: sizes in bytes


def describe(columns: Sequence[Column[Any]]) -> str:
    """The list of columns for --help (and the man page's table): NAME  what it holds."""
    listed = [c for c in columns if c.listed]
    width = max(len(c.name) for c in listed)
    return "\n".join(f"  {c.name.ljust(width)}  {c.help}" for c in listed)


def human_size(n: int) -> str:
    """Bytes as lsipc prints them without --bytes: 512B, 4K, 1.5M (powers of 1024)."""
    units = "BKMGTPE"
    exp = 0
    while n >= 1024 ** (exp + 1) and exp < len(units) - 1:
        exp += 1
    if exp == 0:
        return f"{n}B"
    tenths = round(n * 10 / 1024**exp)
    whole, frac = divmod(tenths, 10)
    return f"{whole}{units[exp]}" if frac == 0 else f"{whole}.{frac}{units[exp]}"


def size_text(n: int, style: Style) -> str:
    return str(n) if style.bytes else human_size(n)


def time_text(t: float, style: Style) -> str:
    """A time: ISO 8601 in --raw (as lsipc's --time-format=iso), else local minutes."""
    if not t:
        return "-"
    when = datetime.fromtimestamp(t).astimezone()
    return when.isoformat(timespec="seconds") if style.raw else when.strftime("%Y-%m-%d %H:%M")


def colour_of(table: Mapping[str, str], key: str) -> str | None:
    return table.get(key)

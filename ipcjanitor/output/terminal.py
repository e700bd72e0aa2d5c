"""What a terminal changes (systemctl's conventions): colour, REASON cut to its width, a pager.

None of it happens when stdout is not a terminal: a pipe, a file or the journal get every
character, uncoloured, unpaged.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from .columns import Style


def on_terminal() -> bool:
    return sys.stdout.isatty()


def colour_wanted() -> bool:
    """Colour only on a terminal, never with NO_COLOR (no-color.org), TERM=dumb or
    SYSTEMD_COLORS=0 (as systemd's tools)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    if os.environ.get("SYSTEMD_COLORS", "").lower() in ("0", "false", "no", "off"):
        return False
    return on_terminal()


def style(args: Any) -> Style:
    """The Style the options and the terminal ask for."""
    raw = bool(getattr(args, "raw", False))
    tty = on_terminal()
    cut = tty and not raw and not getattr(args, "notruncate", False)
    utf8 = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "") == "utf8"
    return Style(
        raw=raw,
        bytes=bool(getattr(args, "bytes", False)),
        headings=not (getattr(args, "noheadings", False) or getattr(args, "no_legend", False)),
        width=shutil.get_terminal_size().columns if cut else None,
        colour=colour_wanted() and not raw,
        ellipsis="…" if utf8 else "...",
    )


def pager_command() -> list[str] | None:
    """$SYSTEMD_PAGER, else $PAGER, else less; None for "cat" or an empty one (systemctl)."""
    chosen = os.environ.get("SYSTEMD_PAGER", os.environ.get("PAGER", "less"))
    words = chosen.split()
    if not words or words[0] == "cat":
        return None
    return words if shutil.which(words[0]) else None


@contextlib.contextmanager
def paged(args: Any) -> Iterator[None]:
    """What is printed inside goes through a pager on a terminal (less -FRSXMK: it quits at
    once when the text fits one screen), unless --no-pager; else straight to stdout."""
    command = None if getattr(args, "no_pager", False) or not on_terminal() else pager_command()
    if command is None:
        yield
        return
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    env = {**os.environ, "LESS": os.environ.get("SYSTEMD_LESS", "FRSXMK")}
    try:
        subprocess.run(command, input=buffer.getvalue(), text=True, env=env, check=False)
    except OSError:
        sys.stdout.write(buffer.getvalue())

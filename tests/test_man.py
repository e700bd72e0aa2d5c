"""The man pages build from their scdoc sources and render without a warning."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
pytestmark = pytest.mark.skipif(
    shutil.which("scdoc") is None or shutil.which("man") is None, reason="needs scdoc and man-db"
)


@pytest.mark.parametrize("source", sorted(DOCS.glob("*.scd")), ids=lambda p: p.name)
def test_man_page_renders_cleanly(source: Path, tmp_path: Path) -> None:
    page = tmp_path / source.stem
    with source.open() as src, page.open("w") as dst:
        subprocess.run(["scdoc"], stdin=src, stdout=dst, check=True)
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_STDERR="1")
    out = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(page)],
                         capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert out.stderr == ""
    assert "NAME" in out.stdout and "SEE ALSO" in out.stdout

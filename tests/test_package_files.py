"""What the deb and the rpm ship beside the program: the README, the completions."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = ROOT / "packaging" / "debian"
SPEC = (ROOT / "packaging" / "rpm" / "ipcjanitor.spec").read_text()


def test_the_readme_is_in_usr_share_doc() -> None:
    assert "README.md" in (DEBIAN / "ipcjanitor.docs").read_text().split()
    files = SPEC.split("\n%files\n", 1)[1]
    assert any(
        line.startswith("%doc ") and "README.md" in line.split() for line in files.splitlines()
    )
    # /usr/share/doc/ipcjanitor/, not ipcjanitor-VERSION
    assert "%global _docdir_fmt %{name}" in SPEC

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


def test_the_man_page_names_every_installed_file_and_message_id() -> None:
    page = (ROOT / "docs" / "ipcjanitor.8.scd").read_text()
    files = page.split("\n# FILES\n", 1)[1].split("\n# ", 1)[0].replace("\\_", "_")
    for path in ("/var/lib/ipcjanitor/dropins", "/usr/lib/systemd/catalog/ipcjanitor.catalog",
                 "/usr/share/bash-completion/completions/ipcjanitor",
                 "/usr/share/zsh/vendor-completions/_ipcjanitor",
                 "/usr/share/fish/vendor_completions.d/ipcjanitor.fish",
                 "/usr/share/doc/ipcjanitor/"):  # fmt: skip
        assert path in files, path
    journal = page.split("\n# JOURNAL\n", 1)[1].split("\n# ", 1)[0]
    catalog = (ROOT / "packaging" / "ipcjanitor.catalog").read_text()
    ids = [line[3:] for line in catalog.splitlines() if line.startswith("-- ")]
    assert ids and all(f"*{i}*" in journal for i in ids)

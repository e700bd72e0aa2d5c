"""The journal catalog (packaging/ipcjanitor.catalog): one entry per MESSAGE_ID the code
emits, none for an id it does not, each in the format journalctl --update-catalog reads."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ipcjanitor.output import journal

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "packaging" / "ipcjanitor.catalog"
ID128 = re.compile(r"[0-9a-f]{32}")


def catalog_entries() -> dict[str, list[str]]:
    """MESSAGE_ID -> the entry's lines (headers, blank line, text), as catalog.c reads them."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in CATALOG.read_text().splitlines():
        if line.startswith("#") and current is None:
            continue
        if line.startswith("-- "):
            mid = line[3:].strip()
            assert ID128.fullmatch(mid), f"not a lowercase 128-bit id: {line!r}"
            assert mid not in entries, f"two entries for {mid}"
            current = entries[mid] = []
            continue
        assert current is not None or not line.strip(), f"text before the first entry: {line!r}"
        if current is not None:
            current.append(line)
    return entries


def emitted_ids() -> dict[str, str]:
    """Every 32-hex-digit string constant in the package, by the name it is bound to: each
    must be a MESSAGE_ID_* constant (a record's id is never written out at its use)."""
    found: dict[str, str] = {}
    for path in (ROOT / "ipcjanitor").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        bound = {
            id(node.value): t.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and ID128.fullmatch(str(node.value)):
                name = bound.get(id(node), "")
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                assert name.startswith("MESSAGE_ID_"), f"{where}: an id outside a constant"
                found[str(node.value)] = name
    return found


def test_every_emitted_message_id_has_an_entry_and_every_entry_an_emitter() -> None:
    emitted = emitted_ids()
    entries = catalog_entries()
    assert set(emitted) - set(entries) == set(), "emitted without a catalog entry"
    assert set(entries) - set(emitted) == set(), "catalog entries nothing emits"
    assert set(journal.MESSAGE_IDS.values()) <= set(entries)
    assert len(set(emitted.values())) == len(emitted), "one constant per id"


def test_each_entry_has_a_subject_headers_and_text() -> None:
    for mid, lines in catalog_entries().items():
        blank = lines.index("")  # headers end at the first empty line
        headers = dict(h.split(": ", 1) for h in lines[:blank])
        assert set(headers) >= {"Subject", "Defined-By", "Support", "Documentation"}, mid
        assert headers["Defined-By"] == "ipcjanitor"
        assert all(d.startswith("man:") for d in headers["Documentation"].split()), mid
        text = [line for line in lines[blank:] if line.strip()]
        assert text, f"{mid} explains nothing"
        # substitutions name fields the records carry (a missing one reads as nothing)
        for var in re.findall(r"@([A-Z0-9_]+)@", "\n".join(lines)):
            assert var.startswith("IPCJANITOR_"), f"{mid}: @{var}@"


def test_the_packages_install_it_and_update_the_catalog() -> None:
    install = (ROOT / "packaging" / "debian" / "ipcjanitor.install").read_text()
    assert "packaging/ipcjanitor.catalog usr/lib/systemd/catalog/" in install
    postinst = (ROOT / "packaging" / "debian" / "postinst").read_text()
    assert "journalctl --update-catalog" in postinst and "#DEBHELPER#" in postinst
    spec = (ROOT / "packaging" / "rpm" / "ipcjanitor.spec").read_text()
    assert "packaging/ipcjanitor.catalog %{buildroot}%{_prefix}/lib/systemd/catalog/" in spec
    files = spec.split("\n%files\n", 1)[1].splitlines()
    assert "%{_prefix}/lib/systemd/catalog/ipcjanitor.catalog" in files
    section = spec.split("\n%install\n", 1)[1].split("\n%post\n", 1)[0].splitlines()
    assert all(line.startswith(("#", "install ", "test ", "DEB_")) or not line for line in section)
    post = spec.split("\n%post\n", 1)[1].split("\n%", 1)[0]
    assert "journalctl --update-catalog" in post
    postun = spec.split("\n%postun\n", 1)[1].split("\n%files", 1)[0]
    assert "journalctl --update-catalog" in postun


@pytest.mark.skipif(
    shutil.which("journalctl") is None and not os.environ.get("CI"),
    reason="needs journalctl (apt-get install systemd)",
)
def test_journalctl_indexes_every_entry(tmp_path: Path) -> None:
    """`journalctl --update-catalog`, as postinst runs it, under a scratch --root."""
    (tmp_path / "usr/lib/systemd/catalog").mkdir(parents=True)
    shutil.copy(CATALOG, tmp_path / "usr/lib/systemd/catalog/ipcjanitor.catalog")
    root = f"--root={tmp_path}"
    subprocess.run(["journalctl", root, "--update-catalog"], check=True, capture_output=True)
    listed = subprocess.run(["journalctl", root, "--list-catalog"], check=True,
                            capture_output=True, text=True).stdout.splitlines()  # fmt: skip
    assert sorted(line.split()[0] for line in listed) == sorted(catalog_entries())
    assert all(line.split(None, 2)[1] == "ipcjanitor:" for line in listed)

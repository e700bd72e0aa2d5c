"""The list of drop-ins install-hook wrote, and the package scripts that read it on remove/purge.

packaging/dropins.sh runs here against a scratch root (DPKG_ROOT), as dpkg would give it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from ipcjanitor.errors import NotPermittedError
from ipcjanitor.hook import dropins
from ipcjanitor.hook.install import dropin_text

SCRIPT = Path(__file__).parent.parent / "packaging" / "dropins.sh"
TRAMPOLINE = "/usr/lib/python3/dist-packages/ipcjanitor/ipcjanitor-hook"
TEXT = dropin_text(f"{TRAMPOLINE} /usr/bin/ipcjanitor hook --unit=%n")
LEAKY = "/etc/systemd/system/leaky.service.d/ipcjanitor.conf"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch root: dropins.py keeps its list in ROOT/var/lib/ipcjanitor."""
    (tmp_path / "var" / "lib").mkdir(parents=True, mode=0o755)
    monkeypatch.setattr(dropins, "LIST_DIR", tmp_path / "var" / "lib" / "ipcjanitor")
    return tmp_path


def put(root: Path, path: str, text: str) -> Path:
    f = root / path.lstrip("/")
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


def run(root: Path, function: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DPKG_ROOT=str(root))
    return subprocess.run(
        ["sh", "-euc", f". {SCRIPT}; {function}"], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip


def test_the_list_holds_each_drop_in_once_with_its_digest(root: Path) -> None:
    dropins.note(Path(LEAKY), TEXT)
    dropins.note(Path("/run/systemd/system/w@.service.d/ipcjanitor.conf"), "x")
    dropins.note(Path(LEAKY), TEXT + "#\n")  # written again, with another text
    listing = (root / "var/lib/ipcjanitor/dropins").read_text()
    again = hashlib.sha256((TEXT + "#\n").encode()).hexdigest()
    assert listing == (
        f"{again}  {LEAKY}\n"
        f"{hashlib.sha256(b'x').hexdigest()}  /run/systemd/system/w@.service.d/ipcjanitor.conf\n"
    )
    assert (root / "var/lib/ipcjanitor").stat().st_mode & 0o777 == 0o700
    assert (root / "var/lib/ipcjanitor/dropins").stat().st_mode & 0o777 == 0o644
    dropins.note(Path(LEAKY), None)  # install-hook --remove
    assert list(dropins.listed(root / "var/lib/ipcjanitor")) == [
        "/run/systemd/system/w@.service.d/ipcjanitor.conf"
    ]


def test_only_drop_in_paths_go_on_the_list(root: Path) -> None:
    with pytest.raises(NotPermittedError, match="not a drop-in path"):
        dropins.note(Path("/etc/passwd"), "x")


def test_a_symlink_in_place_of_the_list_is_refused(root: Path) -> None:
    (root / "var/lib/ipcjanitor").mkdir(mode=0o700)
    (root / "var/lib/ipcjanitor/dropins").symlink_to(root / "elsewhere")
    with pytest.raises(NotPermittedError, match="symlink"):
        dropins.note(Path(LEAKY), TEXT)
    assert not (root / "elsewhere").exists()


def test_remove_warns_about_each_hook_left_without_its_trampoline(root: Path) -> None:
    put(root, LEAKY, TEXT)
    put(root, "/run/systemd/system/w@.service.d/ipcjanitor.conf", TEXT)
    put(root, "/etc/systemd/system/other.service.d/ipcjanitor.conf", "[Service]\nNice=1\n")
    kept = put(root, "/etc/systemd/system/alive.service.d/ipcjanitor.conf",
               dropin_text("/opt/ij/ipcjanitor-hook /usr/bin/ipcjanitor hook"))  # fmt: skip
    put(root, "/opt/ij/ipcjanitor-hook", "")  # its trampoline is still there
    err = run(root, "ipcjanitor_warn_dropins").stderr
    assert "warning: leaky.service is still hooked" in err
    assert f"{LEAKY} runs {TRAMPOLINE}, which is gone" in err
    assert "warning: w@.service is still hooked" in err
    assert "other.service" not in err and "alive.service" not in err, err
    assert kept.exists()


def test_purge_deletes_exactly_the_unchanged_drop_ins_install_hook_wrote(root: Path) -> None:
    ours = put(root, LEAKY, TEXT)
    beside = put(root, "/etc/systemd/system/leaky.service.d/limits.conf", "[Service]\nNice=1\n")
    changed = put(root, "/etc/systemd/system/edited.service.d/ipcjanitor.conf", TEXT + "#me\n")
    unlisted = put(root, "/etc/systemd/system/old.service.d/ipcjanitor.conf", TEXT)
    alone = put(root, "/run/systemd/system/w@.service.d/ipcjanitor.conf", TEXT)
    for path in (LEAKY, "/etc/systemd/system/edited.service.d/ipcjanitor.conf",
                 "/run/systemd/system/w@.service.d/ipcjanitor.conf"):  # fmt: skip
        dropins.note(Path(path), TEXT)
    done = run(root, "ipcjanitor_purge_dropins")
    assert not ours.exists() and beside.exists()
    assert not alone.exists() and not alone.parent.exists()  # its directory went with it
    assert changed.exists() and unlisted.exists()
    assert f"removed {LEAKY}" in done.stdout
    assert "kept /etc/systemd/system/edited.service.d/ipcjanitor.conf: changed" in done.stderr
    assert not (root / "var/lib/ipcjanitor").exists()


def test_purge_ignores_a_line_that_names_another_file(root: Path) -> None:
    victim = put(root, "/etc/important", "x")
    digest = hashlib.sha256(b"x").hexdigest()
    put(root, "/var/lib/ipcjanitor/dropins", f"{digest}  /etc/important\n")
    run(root, "ipcjanitor_purge_dropins")
    assert victim.exists()


def test_purge_without_a_list_does_nothing(root: Path) -> None:
    ours = put(root, LEAKY, TEXT)
    assert run(root, "ipcjanitor_purge_dropins").stdout == ""
    assert ours.exists()


def test_the_script_survives_rpm_macro_expansion() -> None:
    """The spec %include-s it into %postun, and rpm expands every % it reads (%% becomes %)."""
    assert "%" not in SCRIPT.read_text()

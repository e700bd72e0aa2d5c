"""Where runs keep their lock: as root, never where the environment says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.engine import lock


def test_root_ignores_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a hook runs as root with the hooked service's Environment=: it must not pick root's lock
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("IPCJANITOR_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert lock.state_dir() == Path("/run/ipcjanitor")
    assert lock.lock_path().parent == Path("/run/ipcjanitor")


def test_other_users_may_choose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("IPCJANITOR_LOCK_DIR", str(tmp_path / "a"))
    assert lock.state_dir() == tmp_path / "a"
    monkeypatch.delenv("IPCJANITOR_LOCK_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "b"))
    assert lock.state_dir() == tmp_path / "b"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert lock.state_dir() == Path("/tmp/ipcjanitor-1000")

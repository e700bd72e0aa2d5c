"""Where runs keep their lock: as root, never where the environment says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.engine import lock
from ipcjanitor.errors import NotPermittedError
from ipcjanitor.state import state_dir


def test_root_ignores_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a hook runs as root with the hooked service's Environment=: it must not pick root's lock
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("IPCJANITOR_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert state_dir() == Path("/run/ipcjanitor")
    assert lock.lock_path().parent == Path("/run/ipcjanitor")


def test_other_users_may_choose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("IPCJANITOR_LOCK_DIR", str(tmp_path / "a"))
    assert state_dir() == tmp_path / "a"
    monkeypatch.delenv("IPCJANITOR_LOCK_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "b"))
    assert state_dir() == tmp_path / "b"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert state_dir() == Path("/tmp/ipcjanitor-1000")


def test_as_root_a_lock_directory_of_another_user_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    where = tmp_path / "lockdir"
    where.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(where, 65534, 65534)  # as if nobody had made it
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(NotPermittedError, match=r"belongs to uid .*not root: .*rm -r"):
        lock.acquire(where / "run.lock")
    assert not (where / "run.lock").exists()


@pytest.mark.parametrize("plant", ["symlink", "fifo", "mode 0644", "hard link"])
def test_a_lock_file_not_made_by_this_user_alone_is_refused(tmp_path: Path, plant: str) -> None:
    path = tmp_path / "run.lock"
    if plant == "symlink":
        (tmp_path / "elsewhere").touch()
        path.symlink_to(tmp_path / "elsewhere")
    elif plant == "fifo":
        os.mkfifo(path)
    elif plant == "mode 0644":
        path.touch(mode=0o644)
        path.chmod(0o644)
    else:
        path.touch(mode=0o600)
        os.link(path, tmp_path / "other-name")
    with pytest.raises(NotPermittedError, match=r"run lock .*run\.lock"):
        lock.acquire(path)


def test_a_new_lock_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        held = lock.acquire(tmp_path / "d" / "run.lock")
    finally:
        os.umask(old)
    held.release()
    assert (tmp_path / "d" / "run.lock").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700


def test_a_lock_held_past_the_limit_is_lock_busy(tmp_path: Path) -> None:
    first = lock.acquire(tmp_path / "run.lock")  # flock is per open file: a second open waits
    try:
        with pytest.raises(lock.LockBusy, match=rf"pid {os.getpid()}\) has held .* nothing was"):
            lock.acquire(tmp_path / "run.lock", limit=0.1)
    finally:
        first.release()
    lock.acquire(tmp_path / "run.lock", limit=0.1).release()

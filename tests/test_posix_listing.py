"""kernel/posix.py on a plain directory standing in for /dev/shm (no IPC object is made)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ipcjanitor.kernel import posix
from ipcjanitor.model import PosixKind


def names(listing: posix.Listing) -> list[tuple[str, str]]:
    return [(o.kind.value, o.name) for o in listing.objects]


def test_files_at_every_depth_and_semaphores_at_the_top(tmp_path: Path) -> None:
    (tmp_path / "PostgreSQL.1804289383").write_bytes(b"x" * 10)
    (tmp_path / "sem.jack_sem.0").write_bytes(b"")
    (tmp_path / "app" / "deep").mkdir(parents=True)
    (tmp_path / "app" / "buf0").write_bytes(b"")
    (tmp_path / "app" / "deep" / "sem.x").write_bytes(b"")  # a sem. name below the top is shm
    listing = posix.list_posix({PosixKind.SHM, PosixKind.SEM}, shm_root=tmp_path)
    assert names(listing) == [
        ("posix-shm", "PostgreSQL.1804289383"),
        ("posix-shm", "app/buf0"),
        ("posix-shm", "app/deep/sem.x"),
        ("posix-sem", "jack_sem.0"),
    ]
    pg = listing.objects[0]
    st = os.stat(tmp_path / "PostgreSQL.1804289383")
    assert (pg.dev, pg.ino, pg.size, pg.nlink) == (st.st_dev, st.st_ino, 10, 1)
    assert pg.parents == (("", os.stat(tmp_path).st_dev, os.stat(tmp_path).st_ino),)
    assert listing.objects[1].parents[1][0] == "app" and listing.objects[1].entry == "buf0"
    assert pg.last_activity == max(st.st_mtime_ns, st.st_ctime_ns) / 1e9


def test_kinds_filter(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    (tmp_path / "sem.b").write_bytes(b"")
    assert names(posix.list_posix({PosixKind.SEM}, shm_root=tmp_path)) == [("posix-sem", "b")]


def test_symlinks_fifos_and_sockets_are_no_objects_and_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"")
    root = tmp_path / "shm"
    root.mkdir()
    (root / "psm_link").symlink_to(outside / "secret")
    (root / "dirlink").symlink_to(outside)
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        listing = posix.list_posix(shm_root=root, mq_root=tmp_path / "nomq", procfs=tmp_path)
    finally:
        sock.close()
    assert listing.objects == ()
    assert listing.ignored == 4


def test_a_directory_swapped_for_a_symlink_during_the_walk_is_not_entered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "shm"
    (root / "user").mkdir(parents=True)
    (root / "user" / "mine").write_bytes(b"")
    target = tmp_path / "etc"
    target.mkdir()
    (target / "shadow").write_bytes(b"")
    real_open = os.open

    def swapping_open(
        path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if path == "user":  # after stat saw the directory, before it is opened
            os.rename(root / "user", tmp_path / "moved")
            (root / "user").symlink_to(target)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", swapping_open)
    listing = posix.list_posix({PosixKind.SHM}, shm_root=root)
    assert listing.objects == ()
    assert listing.notes == (f"{root}/user changed during the walk: not entered",)


def test_a_directory_replaced_by_another_directory_is_not_entered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "shm"
    (root / "user").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f").write_bytes(b"")
    real_open = os.open

    def swapping_open(
        path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if path == "user":
            os.rename(root / "user", tmp_path / "moved")
            os.rename(tmp_path / "other", root / "user")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", swapping_open)
    listing = posix.list_posix({PosixKind.SHM}, shm_root=root)
    assert listing.objects == ()
    assert "changed during the walk" in listing.notes[0]


def test_depth_is_bounded(tmp_path: Path) -> None:
    deep = tmp_path
    for _ in range(posix.MAX_DEPTH + 3):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"")
    listing = posix.list_posix({PosixKind.SHM}, shm_root=tmp_path)
    assert listing.objects == ()
    assert "deeper than" in listing.notes[0]


def test_an_unmounted_mqueue_is_said_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text("22 1 0:21 / /dev/shm rw - tmpfs tmpfs rw\n")
    listing = posix.list_posix({PosixKind.MQ}, procfs=tmp_path, mq_root=Path("/dev/mqueue"))
    assert listing.objects == ()
    assert listing.notes == (
        "/dev/mqueue is not mounted (no mqueue filesystem there): POSIX message queues were "
        "not listed (mount -t mqueue mqueue /dev/mqueue)",
    )


def test_another_filesystem_type_at_the_mqueue_mount_point(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(
        "30 1 0:40 / /dev/mqueue rw - mqueue mqueue rw\n"
        "31 30 0:41 / /dev/mqueue rw - tmpfs tmpfs rw\n"
    )
    listing = posix.list_posix({PosixKind.MQ}, procfs=tmp_path)
    assert "is a tmpfs filesystem, not mqueue" in listing.notes[0]


def test_mountinfo_escapes(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text("30 1 0:40 / /a\\040b rw - mqueue mqueue rw\n")
    assert posix.mount_type(tmp_path, Path("/a b")) == "mqueue"
    assert posix.mount_type(tmp_path, Path("/a")) is None


def test_an_unreadable_root_is_said(tmp_path: Path) -> None:
    listing = posix.list_posix({PosixKind.SHM}, shm_root=tmp_path / "missing")
    assert listing.objects == ()
    assert "cannot be read" in listing.notes[0]


def test_our_own_removal_directory_is_not_entered(tmp_path: Path) -> None:
    (tmp_path / ".ipcjanitor-0123").mkdir(mode=0o700)
    (tmp_path / ".ipcjanitor-0123" / "1").write_bytes(b"")
    listing = posix.list_posix({PosixKind.SHM}, shm_root=tmp_path)
    assert listing.objects == ()
    assert listing.notes == (
        f"{tmp_path}/.ipcjanitor-0123 is ipcjanitor's own removal directory: not entered",
    )

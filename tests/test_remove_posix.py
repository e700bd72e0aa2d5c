"""engine/remove_posix.py on a plain directory standing in for /dev/shm: it removes the
inode judged and nothing else, whatever is swapped in between."""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from ipcjanitor.engine.remove_posix import remove_posix
from ipcjanitor.kernel import posix
from ipcjanitor.kernel.holders import Holders, Identity
from ipcjanitor.model import PosixDecision, PosixKind, Verdict


def nobody(_: Iterable[Identity]) -> Holders:
    return Holders({}, None)


def judged(root: Path) -> list[PosixDecision]:
    listing = posix.list_posix({PosixKind.SHM, PosixKind.SEM}, shm_root=root)
    return [PosixDecision(o, "x", Verdict.STALE, "judged stale") for o in listing.objects]


def run(
    root: Path,
    decisions: list[PosixDecision],
    reread: Callable[[Iterable[Identity]], Holders] = nobody,
    *,
    leases: bool = False,
) -> list[tuple[str, Verdict, str]]:
    """leases=False by default: these tests drive the re-read (a holder or a swap injected
    there); the tests of leases ask for them."""
    out = remove_posix(decisions, reread, shm_root=root, leases=leases)
    return [(d.obj.name, d.verdict, d.reason) for d in out]


def test_stale_files_are_removed_and_others_passed_through(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "buf").write_bytes(b"")
    (tmp_path / "sem.s").write_bytes(b"")
    ds = judged(tmp_path)
    ds[2] = ds[2]._replace(verdict=Verdict.IN_USE, reason="mapped")
    out = run(tmp_path, ds)
    assert out == [
        ("psm_1", Verdict.REMOVED, "judged stale"),
        ("s", Verdict.REMOVED, "judged stale"),
        ("sub/buf", Verdict.IN_USE, "mapped"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
    assert (tmp_path / "sub" / "buf").exists()


def test_a_file_replaced_after_the_scan_stays(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"old")
    ds = judged(tmp_path)
    (tmp_path / "new").write_bytes(b"new")
    os.rename(tmp_path / "new", tmp_path / "psm_1")
    assert run(tmp_path, ds)[0][1:] == (
        Verdict.CHANGED,
        "its name now belongs to another file (replaced since the scan)",
    )
    assert (tmp_path / "psm_1").read_bytes() == b"new"


def test_a_symlink_swapped_in_is_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "shm"
    root.mkdir()
    victim = tmp_path / "etc-shadow"
    victim.write_bytes(b"root's")
    (root / "psm_1").write_bytes(b"")
    ds = judged(root)
    (root / "psm_1").unlink()
    (root / "psm_1").symlink_to(victim)
    assert run(root, ds)[0][1:] == (Verdict.CHANGED, "its name is no longer the file judged")
    assert victim.read_bytes() == b"root's" and (root / "psm_1").is_symlink()


def test_a_directory_swapped_for_a_symlink_is_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "shm"
    (root / "user").mkdir(parents=True)
    (root / "user" / "f").write_bytes(b"")
    ds = judged(root)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "f").write_bytes(b"keep")
    os.rename(root / "user", tmp_path / "moved")
    (root / "user").symlink_to(elsewhere)
    out = run(root, ds)
    assert out[0][1] is Verdict.CHANGED and "its directory changed since the scan" in out[0][2]
    assert (elsewhere / "f").read_bytes() == b"keep" and (tmp_path / "moved" / "f").exists()


def test_a_directory_moved_under_another_of_the_same_name_is_not_entered(
    tmp_path: Path,
) -> None:
    """The walk's own safeguard (each directory's dev and inode, from the root): a/ is
    replaced by another directory a/ and the judged b/ moved into it, its file untouched
    (same inode, times, size, links: the object's own checks pass). The name a/b/f now
    leads through a directory the scan never walked: kept, nothing removed."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"keep")
    ds = judged(tmp_path)
    os.rename(tmp_path / "a", tmp_path / "old")
    (tmp_path / "a").mkdir()
    os.rename(tmp_path / "old" / "b", tmp_path / "a" / "b")
    assert run(tmp_path, ds) == [
        ("a/b/f", Verdict.CHANGED, "its directory was replaced since the scan")
    ]
    assert (tmp_path / "a" / "b" / "f").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "old"]  # no aside left


def test_a_directory_replaced_by_another_is_not_entered(tmp_path: Path) -> None:
    """user/ swapped for another directory holding a file of the same name: the walk stops
    at the directory (its inode is not the scan's), before any file in it is opened."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "psm_1").write_bytes(b"judged")
    ds = judged(tmp_path)
    os.rename(tmp_path / "user", tmp_path / "moved")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "psm_1").write_bytes(b"decoy")
    assert run(tmp_path, ds) == [
        ("user/psm_1", Verdict.CHANGED, "its directory was replaced since the scan")
    ]
    assert (tmp_path / "user" / "psm_1").read_bytes() == b"decoy"
    assert (tmp_path / "moved" / "psm_1").read_bytes() == b"judged"


def test_a_name_in_a_subdirectory_swapped_at_the_moment_of_removal_is_put_back(
    tmp_path: Path,
) -> None:
    """The rename aside's own safeguard (what arrived in our directory is compared with the
    open object): the walk and the open checks all passed, then, with the object open and
    locked, its name in user/ is swapped for another file; that file is what the rename
    moves out of user/, and it goes back there untouched."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "psm_1").write_bytes(b"judged")
    ds = judged(tmp_path)

    def swap(ids: Iterable[Identity]) -> Holders:  # runs after the open, before the rename
        (tmp_path / "victim").write_bytes(b"victim")
        os.rename(tmp_path / "victim", tmp_path / "user" / "psm_1")
        return Holders({}, None)

    out = run(tmp_path, ds, swap)
    assert out[0][1] is Verdict.CHANGED and "swapped for another file" in out[0][2], out
    assert (tmp_path / "user" / "psm_1").read_bytes() == b"victim"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]  # our directory is gone


def test_a_hard_link_made_since_the_scan_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"")
    ds = judged(tmp_path)
    os.link(tmp_path / "psm_1", tmp_path / "other")
    assert run(tmp_path, ds)[0][1] is Verdict.CHANGED
    assert (tmp_path / "psm_1").exists()


def test_a_lock_sh_holder_makes_it_changed(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"")
    ds = judged(tmp_path)
    fd = os.open(tmp_path / "psm_1", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # another open file description: our LOCK_EX must wait
        assert run(tmp_path, ds)[0][1:] == (
            Verdict.CHANGED,
            "a process holds a lock on it (a cooperative owner is alive)",
        )
    finally:
        os.close(fd)
    assert (tmp_path / "psm_1").exists()


def test_holders_found_with_the_locks_held_keep_it(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"")
    (tmp_path / "psm_2").write_bytes(b"")
    ds = judged(tmp_path)
    seen: list[list[Identity]] = []

    def one_holder(ids: Iterable[Identity]) -> Holders:
        ids = list(ids)
        seen.append(ids)
        return Holders({ids[0]: ("mapped by pid 9 (late)",)}, None)

    out = run(tmp_path, ds, one_holder)
    assert out == [
        ("psm_1", Verdict.CHANGED, "since the scan, mapped by pid 9 (late)"),
        ("psm_2", Verdict.REMOVED, "judged stale"),
    ]
    assert len(seen) == 1 and len(seen[0]) == 2  # one re-read for the whole batch
    assert (tmp_path / "psm_1").exists() and not (tmp_path / "psm_2").exists()


def test_a_blind_reread_removes_nothing(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"")
    out = run(tmp_path, judged(tmp_path), lambda ids: Holders({}, "hidepid"))
    assert out[0][1:] == (Verdict.CHANGED, "since the scan, cannot re-check its holders: hidepid")
    assert (tmp_path / "psm_1").exists()


def test_a_name_swapped_between_the_last_check_and_unlink_is_kept(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"old")
    ds = judged(tmp_path)

    def swap(ids: Iterable[Identity]) -> Holders:  # runs after the object is open and locked
        (tmp_path / "new").write_bytes(b"new")
        os.rename(tmp_path / "new", tmp_path / "psm_1")
        return Holders({}, None)

    assert run(tmp_path, ds, swap)[0][1:] == (
        Verdict.CHANGED,
        "its name was swapped for another file at the moment of removal: that file was put "
        "back, untouched",
    )
    assert (tmp_path / "psm_1").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psm_1"]  # our directory is gone


def test_a_directory_swapped_in_at_the_moment_of_removal_is_put_back(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"old")
    ds = judged(tmp_path)

    def swap(ids: Iterable[Identity]) -> Holders:
        (tmp_path / "psm_1").rename(tmp_path / "aside")
        (tmp_path / "psm_1").mkdir()
        (tmp_path / "psm_1" / "inner").write_bytes(b"keep")
        return Holders({}, None)

    assert run(tmp_path, ds, swap)[0][1] is Verdict.CHANGED
    assert (tmp_path / "psm_1" / "inner").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aside", "psm_1"]


def test_removal_goes_through_a_directory_of_our_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "psm_1").write_bytes(b"")
    ds = judged(tmp_path)
    seen: list[tuple[int, int]] = []
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        st = os.fstat(dir_fd) if dir_fd is not None else None
        if st is not None:
            seen.append((st.st_uid, st.st_mode & 0o777))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    assert run(tmp_path, ds)[0][1] is Verdict.REMOVED
    assert seen == [(os.geteuid(), 0o700)]
    assert list(tmp_path.iterdir()) == []


def test_vanished_is_changed(tmp_path: Path) -> None:
    (tmp_path / "psm_1").write_bytes(b"")
    ds = judged(tmp_path)
    (tmp_path / "psm_1").unlink()
    assert run(tmp_path, ds)[0][1] is Verdict.CHANGED


def test_a_leased_object_is_still_re_read_and_a_holder_there_keeps_it(tmp_path: Path) -> None:
    """The lease adds the kernel's word to the contract's re-read; it does not replace it."""
    (tmp_path / "psm_1").write_bytes(b"")
    asked: list[Identity] = []

    def holds(ids: Iterable[Identity]) -> Holders:
        asked.extend(ids)
        return Holders({i: ("fd 3 of pid 77 (x)",) for i in asked}, None)

    out = run(tmp_path, judged(tmp_path), holds, leases=True)
    assert out == [("psm_1", Verdict.CHANGED, "since the scan, fd 3 of pid 77 (x)")]
    assert len(asked) == 1 and (tmp_path / "psm_1").exists()
    out = run(tmp_path, judged(tmp_path), nobody, leases=True)
    assert out == [("psm_1", Verdict.REMOVED, "judged stale")]
    assert list(tmp_path.iterdir()) == []


def test_a_mapping_made_since_the_scan_refuses_the_lease(tmp_path: Path) -> None:
    """A holder no /proc re-read would see here (the fake re-read sees nobody): a mapping
    whose fd is closed holds its open file, and the kernel refuses the lease."""

    (tmp_path / "psm_1").write_bytes(b"x" * 4096)
    ds = judged(tmp_path)
    fd = os.open(tmp_path / "psm_1", os.O_RDONLY)
    m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
    os.close(fd)
    try:
        assert run(tmp_path, ds, nobody, leases=True)[0][1:] == (
            Verdict.CHANGED,
            "since the scan, another process opened it (the kernel refused a write lease)",
        )
    finally:
        m.close()
    assert (tmp_path / "psm_1").exists()


def test_an_open_at_the_moment_of_removal_puts_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open(2) that found the name before our rename waits on the lease: the object goes
    back under its name and that open then gets it."""

    (tmp_path / "psm_1").write_bytes(b"keep")
    ds = judged(tmp_path)
    opened: list[bytes] = []
    real_rename = os.rename

    def opener() -> None:
        fd = os.open(tmp_path / "psm_1", os.O_RDONLY)  # waits for the lease to go
        opened.append(os.read(fd, 4))
        os.close(fd)

    def rename(src: str, dst: str, **kw: int) -> None:
        if src == "psm_1":
            worker.start()
            time.sleep(0.3)  # it is waiting in break_lease now
        real_rename(src, dst, **kw)

    worker = threading.Thread(target=opener)
    monkeypatch.setattr(os, "rename", rename)
    out = run(tmp_path, ds, nobody, leases=True)
    worker.join(10)
    assert out[0][1:] == (
        Verdict.CHANGED,
        "another process began to open it at the moment of removal: put back, untouched",
    )
    assert opened == [b"keep"] and (tmp_path / "psm_1").read_bytes() == b"keep"

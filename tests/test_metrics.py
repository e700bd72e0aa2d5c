"""--metrics FILE as root: written only into a directory only root can write, by descriptor.

The layout is Debian's prometheus-node-exporter's: /var/lib/prometheus belongs to the
prometheus user, its node-exporter/ (the textfile directory) to root. The prometheus user's
moves are made here by root with the user's ownership (chown, lchown), as tests/test_chase.py
makes them; what matters to the walk is who owns what.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipcjanitor.errors import UsageError
from ipcjanitor.output import metrics

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root to chown")
PROMETHEUS = 65534
SECRET = 'ipcjanitor_removed_objects_total{kind="shm"} 41.0\n'  # what root alone may read

pytestmark = as_root


@pytest.fixture
def textdir(tmp_path: Path) -> Path:
    """tmp/prometheus (the prometheus user's, 0755) / node-exporter (root's, 0755)."""
    home = tmp_path / "prometheus"
    home.mkdir(mode=0o755)
    os.chown(home, PROMETHEUS, PROMETHEUS)
    (home / "node-exporter").mkdir(mode=0o755)
    return home / "node-exporter"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-only file (0600) beside the tree, and its directory root-only too."""
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    f = vault / "shadow"
    f.write_text(SECRET)
    f.chmod(0o600)
    return f


def write(path: Path) -> None:
    metrics.write(str(path), [], 0.0, 1.0, run=metrics.Run("clean", ""))


class Blocked(Exception):
    """Not an OSError (as TimeoutError is): no `except OSError` on the way can take it."""


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn(), or Blocked if it blocks (an open of a FIFO): SIGALRM interrupts the call."""

    def expire(signum: int, frame: object) -> None:
        raise Blocked(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def refusal(fn: Callable[[], Any]) -> str:
    """The one-line error fn raises, within 3 s ("" if it raises none)."""
    try:
        within(3, fn)
    except UsageError as exc:
        return str(exc)
    return ""


def unchanged(f: Path) -> bool:
    st = os.lstat(f)
    return stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0 and f.read_text() == SECRET


def test_debians_layout_is_written_0644_and_root_s(textdir: Path) -> None:
    out = textdir / "ipcjanitor.prom"
    write(out)
    write(out)  # over the previous one, read back for the counters
    st = os.lstat(out)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0
    assert 'ipcjanitor_run_duration_seconds{source="clean",unit=""} 1.0' in out.read_text()
    assert os.listdir(textdir) == ["ipcjanitor.prom"]  # no temporary file left


def test_the_umask_does_not_decide_the_mode(textdir: Path) -> None:
    old = os.umask(0o077)
    try:
        write(textdir / "ipcjanitor.prom")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(textdir / "ipcjanitor.prom").st_mode) == 0o644


def test_the_directory_swapped_for_a_symlink_to_a_root_only_one_is_refused(
    textdir: Path, secret: Path
) -> None:
    textdir.rename(textdir.parent / "was")  # the prometheus user owns the directory above
    textdir.symlink_to(secret.parent)
    os.lchown(textdir, PROMETHEUS, PROMETHEUS)
    message = refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert os.listdir(secret.parent) == ["shadow"] and unchanged(secret)
    assert message.startswith(f"--metrics {textdir}/ipcjanitor.prom: ")
    assert f"symlink {textdir} is owned by uid {PROMETHEUS}, not root" in message


def test_a_directory_of_another_user_is_refused(textdir: Path) -> None:
    os.chown(textdir, PROMETHEUS, PROMETHEUS)  # theirs: they could swap any name in it
    message = refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert os.listdir(textdir) == []
    assert f"directory {textdir} is owned by uid {PROMETHEUS}, not root" in message
    assert f"chown root {textdir}" in message


def test_a_directory_others_may_write_is_refused_even_sticky(textdir: Path) -> None:
    textdir.chmod(0o1777)
    message = refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert os.listdir(textdir) == [] and "writable by group or others" in message


def test_a_directory_chosen_by_its_owner_elsewhere_is_refused(
    textdir: Path, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs"  # the prometheus user's own directory, put in its place
    theirs.mkdir()
    os.chown(theirs, PROMETHEUS, PROMETHEUS)
    textdir.rmdir()
    (theirs).rename(textdir)
    message = refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert os.listdir(textdir) == [] and "not root" in message


def test_a_fuse_file_system_below_another_users_directory_is_refused(
    textdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fusermount lets the prometheus user mount over its own directory, and the FUSE server
    says who owns what: a root-owned node-exporter there would be a lie root cannot see."""
    from ipcjanitor import chase

    dev = os.stat(textdir).st_dev
    fake = tmp_path / "mountinfo"
    fake.write_text(f"36 25 {os.major(dev)}:{os.minor(dev)} / / rw - fuse.sshfs sshfs rw\n")
    monkeypatch.setattr(chase, "MOUNTINFO", str(fake))
    message = refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert os.listdir(textdir) == []
    assert f"is on a FUSE file system (fuse.sshfs) below {textdir.parent}" in message


def test_the_file_name_as_a_symlink_to_a_root_only_file_is_neither_read_nor_changed(
    textdir: Path, secret: Path
) -> None:
    out = textdir / "ipcjanitor.prom"
    out.symlink_to(secret)
    message = refusal(lambda: write(out))
    assert unchanged(secret) and out.is_symlink()
    assert "symlink" in message and f"rm {out}" in message


def test_the_file_swapped_for_a_symlink_after_the_rename_is_not_chmodded(
    textdir: Path, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the name replaced by a symlink between the rename and a chmod by name."""
    real_rename = os.rename

    def rename_then_swap(src: str, dst: str, **fds: int | None) -> None:
        real_rename(src, dst, **fds)
        os.unlink(dst, dir_fd=fds.get("dst_dir_fd"))
        os.symlink(secret, dst, dir_fd=fds.get("dst_dir_fd"))

    monkeypatch.setattr(os, "rename", rename_then_swap)
    refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert unchanged(secret)


def test_a_fifo_at_the_file_name_never_blocks(textdir: Path) -> None:
    out = textdir / "ipcjanitor.prom"
    os.mkfifo(out)
    message = refusal(lambda: write(out))
    assert stat.S_ISFIFO(os.lstat(out).st_mode)
    assert "is a FIFO, not a regular file" in message and f"rm {out}" in message


def test_a_fifo_at_the_temporary_name_never_blocks(
    textdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = textdir / "ipcjanitor.prom"
    # prometheus_client's temporary name, and ipcjanitor's first choice made the same FIFO's
    os.mkfifo(f"{out}.{os.getpid()}.{threading.current_thread().ident}")
    os.mkfifo(textdir / "ipcjanitor.prom.fifo")
    names: Iterator[str] = iter(["ipcjanitor.prom.fifo", "ipcjanitor.prom.tmp2"])
    monkeypatch.setattr(metrics, "_temporary_name", lambda name: next(names), raising=False)
    within(3, lambda: write(out))
    st = os.lstat(out)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert stat.S_ISFIFO(os.lstat(textdir / "ipcjanitor.prom.fifo").st_mode)


def test_a_previous_file_of_another_user_is_not_read(textdir: Path) -> None:
    out = textdir / "ipcjanitor.prom"
    out.write_text(SECRET)
    os.chown(out, PROMETHEUS, PROMETHEUS)
    message = refusal(lambda: write(out))  # its counters are not carried over
    assert f"file {out} is owned by uid {PROMETHEUS}, not root" in message


def test_a_previous_file_linked_to_another_name_is_not_read(textdir: Path, secret: Path) -> None:
    out = textdir / "ipcjanitor.prom"
    os.link(secret, out)  # the same inode as a root-only file elsewhere
    message = refusal(lambda: write(out))
    assert unchanged(secret) and "2 links" in message


def test_a_missing_directory_says_what_to_do(textdir: Path) -> None:
    textdir.rmdir()
    message = refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert f"no such file or directory: {textdir}" in message and "mkdir" in message


def test_a_file_name_that_is_a_directory_is_refused(textdir: Path) -> None:
    (textdir / "ipcjanitor.prom").mkdir()
    message = refusal(lambda: write(textdir / "ipcjanitor.prom"))
    assert "is a directory" in message


def test_no_descriptor_is_left_open(textdir: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    write(textdir / "ipcjanitor.prom")
    refusal(lambda: write(textdir / "no" / "ipcjanitor.prom"))
    assert len(os.listdir("/proc/self/fd")) == before


POLICY = '[owners.a]\nunit = "a.service"\nkeys = ["0x10"]\nmin_age = "0s"\n'


def test_clean_removes_nothing_when_the_metrics_directory_is_refused(
    textdir: Path, tmp_path: Path, cleaned: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    from ipcjanitor.cli import main

    (tmp_path / "p.toml").write_text(POLICY)
    os.chown(textdir, PROMETHEUS, PROMETHEUS)
    out = textdir / "ipcjanitor.prom"
    rc = main(["--policy", str(tmp_path / "p.toml"), "clean", "--metrics", str(out)])
    err = capsys.readouterr().err
    assert rc == 64 and cleaned == [] and os.listdir(textdir) == []
    assert f"--metrics {out}: " in err and "nothing was removed" in err


def test_the_hook_removes_nothing_when_the_metrics_directory_is_refused(
    textdir: Path, tmp_path: Path, cleaned: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    from ipcjanitor.hook.gate import HookCall
    from ipcjanitor.hook.run import run_hook

    (tmp_path / "p.toml").write_text(POLICY)
    os.chown(textdir, PROMETHEUS, PROMETHEUS)
    out = textdir / "ipcjanitor.prom"
    rc = run_hook(HookCall("a.service", str(tmp_path / "p.toml"), False, str(out), True))
    err = capsys.readouterr().err
    assert rc == 64 and cleaned == [] and os.listdir(textdir) == []
    assert f"--metrics {out}: " in err and "nothing was removed" in err

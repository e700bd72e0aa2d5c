"""install-hook's drop-in: every word survives systemd's parsing, and nothing unsafe is written."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.errors import NotPermittedError, UsageError
from ipcjanitor.hook import install as hook

# One word as install-hook writes it: bare, or double-quoted with \\ and \" escapes.
WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s"\\\']+)')


def systemd_words(line: str) -> list[str]:
    """What systemd makes of an Exec line from install-hook (systemd.syntax(7), .unit(5), .service(5)).

    Only the forms install-hook may write are accepted: any other escape, a specifier other
    than %%, a variable other than $$, or a stray character fails the test.
    """
    words = []
    pos = 0
    while pos < len(line):
        m = WORD.match(line, pos)
        assert m, f"unparsable at {line[pos:]!r}"
        quoted, bare = m.groups()
        if quoted is not None:
            assert re.fullmatch(r'(?:[^\\]|\\[\\"])*', quoted), f"stray escape in {quoted!r}"
            word = re.sub(r"\\(.)", r"\1", quoted)
        else:
            word = bare
        # a specifier (%x) or a variable ($x) other than the doubled escapes would be expanded
        assert not re.search(r"%[^%]|%$", word.replace("%%", "")), f"specifier in {word!r}"
        assert "$" not in word.replace("$$", ""), f"variable in {word!r}"
        words.append(word.replace("%%", "%").replace("$$", "$"))
        pos = m.end()
        if pos < len(line):
            assert line[pos] == " ", f"words must be separated by one space: {line!r}"
            pos += 1
    return words


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["/usr/bin/ipcjanitor", "hook"], "/usr/bin/ipcjanitor hook"),
        (["/usr/bin/python3", "-I", "-m", "ipcjanitor"], "/usr/bin/python3 -I -m ipcjanitor"),
        (["--policy=/etc/my policy.toml"], '"--policy=/etc/my policy.toml"'),
        (["--policy=/etc/100%/p.toml"], "--policy=/etc/100%%/p.toml"),
        (["--policy=/etc/$HOME/p.toml"], "--policy=/etc/$$HOME/p.toml"),
        (['/opt/a"b\\c/ipcjanitor'], '"/opt/a\\"b\\\\c/ipcjanitor"'),
        (["/opt/it's/ipcjanitor"], '"/opt/it\'s/ipcjanitor"'),
        (["/opt/a;b", "x"], '"/opt/a;b" x'),
        (["/opt/héllo/ipcjanitor"], '"/opt/héllo/ipcjanitor"'),
    ],
)
def test_words_are_quoted_and_escaped_for_systemd(argv: list[str], line: str) -> None:
    assert hook.exec_line(argv) == line
    assert systemd_words(line) == argv


@pytest.mark.parametrize("bad", ["/etc/a\nExecStartPre=/bin/sh", "/etc/a\tb", "/etc/\x7f", "/x\r"])
def test_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="control character"):
        hook.exec_line(["/usr/bin/ipcjanitor", f"--policy={bad}"])


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(UsageError, match="not valid UTF-8"):
        hook.exec_line(["--policy=/etc/\udcff.toml"])  # how Python names an undecodable byte


PRINTABLE = st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=["Cs"])


@given(st.lists(st.text(PRINTABLE, min_size=1), min_size=1))
def test_every_printable_argv_round_trips(argv: list[str]) -> None:
    line = hook.exec_line(argv)
    assert "\n" not in line and "\r" not in line
    assert systemd_words(line) == argv


def test_the_drop_in_starts_the_hook_through_the_trampoline() -> None:
    text = hook.dropin_text("/x/ipcjanitor-hook /usr/bin/ipcjanitor hook --unit=%n")
    assert "\nExecStopPost=-+/x/ipcjanitor-hook /usr/bin/ipcjanitor hook --unit=%n\n" in text
    assert text.count("\nExecStopPost=") == 1 and text.count("\n[") == 1


def test_a_missing_trampoline_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hook, "TRAMPOLINE", tmp_path / "ipcjanitor-hook")
    monkeypatch.setattr(sys, "argv", ["/usr/bin/ipcjanitor", "install-hook", "a.service"])
    with pytest.raises(NotPermittedError, match=r"ipcjanitor-hook is missing.*no drop-in"):
        hook.hook_argv(None)


@pytest.mark.parametrize("loose", ["file", "directory"])
def test_what_others_can_change_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loose: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o755)
    trampoline = bin_dir / "ipcjanitor-hook"
    trampoline.write_bytes(Path("/bin/true").read_bytes())
    trampoline.chmod(0o755)
    (trampoline if loose == "file" else bin_dir).chmod(0o777)
    monkeypatch.setattr(hook, "TRAMPOLINE", trampoline)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/ipcjanitor", "install-hook", "a.service"])
    with pytest.raises(
        NotPermittedError,
        # as root: the loose mode; as another user, tmp_path is not root's to begin with
        match=r"(writable by group or others|not root).*someone else could change it.*no drop-in",
    ):
        hook.hook_argv(None)


def test_python_m_must_import_this_package_when_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    # the system python, isolated from PYTHONPATH and the working directory, cannot import
    # this checkout: the hook it would start is not this ipcjanitor
    monkeypatch.setattr(sys, "argv", ["/x/ipcjanitor/__main__.py", "install-hook", "a.service"])
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    with pytest.raises(NotPermittedError, match=r"-I -m ipcjanitor`, which imports .*not this one"):
        hook.hook_argv(None)


def _nobodys(path: Path) -> Path:
    os.lchown(path, 65534, 65534)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="chowns files to another user")
def test_the_drop_in_is_never_written_through_a_directory_another_user_controls(
    tmp_path: Path,
) -> None:
    units = tmp_path / "system"
    units.mkdir()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    _nobodys(theirs)
    # a.service.d is nobody's symlink to nobody's directory: nobody could rewrite the drop-in
    (units / "a.service.d").symlink_to(theirs)
    _nobodys(units / "a.service.d")
    with pytest.raises(NotPermittedError, match=r"symlink .*a\.service\.d is owned by uid 65534"):
        hook.write_dropin(units / "a.service.d" / "ipcjanitor.conf", "[Service]\n")
    assert os.listdir(theirs) == []
    os.lchown(units / "a.service.d", 0, 0)  # root's link to nobody's directory: still refused
    with pytest.raises(NotPermittedError, match=r"directory .*theirs is owned by uid 65534"):
        hook.write_dropin(units / "a.service.d" / "ipcjanitor.conf", "[Service]\n")
    assert os.listdir(theirs) == []


def test_the_drop_in_and_its_directory_get_their_modes_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "system" / "a.service.d" / "ipcjanitor.conf"
    (tmp_path / "system").mkdir(mode=0o755)
    old = os.umask(0)
    try:
        hook.write_dropin(path, "[Service]\n")
        hook.write_dropin(path, "[Service]\nX=1\n")  # replaced in one rename
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert path.read_text() == "[Service]\nX=1\n"
    assert os.listdir(path.parent) == ["ipcjanitor.conf"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chowns files to another user")
def test_an_executable_reached_through_another_users_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o755)
    real = bin_dir / "ipcjanitor-hook-real"
    real.write_bytes(b"#!/bin/sh\n")
    real.chmod(0o755)
    link = bin_dir / "ipcjanitor-hook"
    link.symlink_to(real)
    monkeypatch.setattr(hook, "TRAMPOLINE", link)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/ipcjanitor", "install-hook", "a.service"])
    hook._check_only_root_can_change(link)  # root's link, root's file: accepted
    _nobodys(link)
    with pytest.raises(NotPermittedError, match=r"symlink .*ipcjanitor-hook is owned by uid 65534"):
        hook._check_only_root_can_change(link)
    os.lchown(link, 0, 0)
    real.chmod(0o644)
    with pytest.raises(NotPermittedError, match=r"is not executable"):
        hook._check_only_root_can_change(link)


@pytest.mark.parametrize("given", ["leaky", "leaky.service"])
def test_install_hook_takes_a_name_without_a_type_as_a_service(
    given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`install-hook leaky` is leaky.service, as systemctl reads it (the hook's --unit: in
    tests/test_hookgate.py). No owner is bound to it, so nothing is written anywhere."""
    from ipcjanitor.cli import main

    policy = tmp_path / "p.toml"
    policy.write_text('[owners.a]\nunit = "other.service"\nkeys = ["0x10"]\n')
    assert main(["--policy", str(policy), "install-hook", given]) == 78
    assert "no policy owner is bound to leaky.service:" in capsys.readouterr().err
    assert not Path("/etc/systemd/system/leaky.service.service.d").exists()

"""install-hook's drop-in: every word survives systemd's parsing, and nothing unsafe is written."""

from __future__ import annotations

import re
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

"""The hooked service's environment and umask decide nothing the root hook does."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.hook.install import TRAMPOLINE
from ipcjanitor.output import journal
from ipcjanitor.systemd.bus import UNTRUSTED_LIMIT, StopInfo


def test_what_the_environment_says_is_labelled_and_never_a_reason() -> None:
    env = {"EXIT_CODE": "killed", "EXIT_STATUS": "KILL by the administrator (ticket 4711)"}
    stop = StopInfo.from_env(env)
    assert stop.describe() == (
        'its environment (which the service sets) reports EXIT_CODE="killed" '
        'EXIT_STATUS="KILL by the administrator (ticket 4711)"'
    )
    hostile = StopInfo.from_env({"EXIT_STATUS": 'x" EXIT_CODE="dumped\x1b[2J'}).describe()
    assert hostile.endswith('EXIT_STATUS="x\\x22 EXIT_CODE=\\x22dumped\\x1b[2J"')


@given(st.text())
def test_reported_text_is_escaped_and_bounded(text: str) -> None:
    said = StopInfo.from_env({"EXIT_STATUS": text}).describe()
    assert said.isprintable()
    assert len(said) < 100 + 10 * UNTRUSTED_LIMIT + 30  # \\UXXXXXXXX at most per character


def test_the_hooks_records_go_to_the_journal_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INVOCATION_ID", "")
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(journal, "journal_socket_exists", lambda: True)
    assert journal.Journal.for_hook("a.service").to_journal
    monkeypatch.setattr(journal, "journal_socket_exists", lambda: False)
    monkeypatch.setenv("INVOCATION_ID", "0123")
    assert not journal.Journal.for_hook("a.service").to_journal


@pytest.mark.parametrize("umask", ["0000", "0777", "0077"])
def test_the_trampoline_starts_the_hook_with_umask_022(umask: str) -> None:
    done = subprocess.run(
        ["sh", "-c", f'umask {umask}; exec "$0" /bin/sh -c umask', str(TRAMPOLINE)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "0022"


def test_the_trampoline_passes_journal_stream_so_the_hook_knows_its_stdout_is_the_journal() -> None:
    """Issue 21.2: without JOURNAL_STREAM the hook printed each removal's table row into the
    unit's journal stream beside its record. The hook checks the variable against fd 1's own
    device and inode (stream_is_journal), so a forged value names no other file."""
    env = {"JOURNAL_STREAM": "8:1234", "PYTHONPATH": "/tmp", "INVOCATION_ID": "0123"}
    done = subprocess.run([str(TRAMPOLINE), "/usr/bin/env"], capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    assert sorted(done.stdout.split()) == [
        "INVOCATION_ID=0123", "JOURNAL_STREAM=8:1234", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    ]  # fmt: skip

"""The hook server's request, answer and socket hand-over (hook/serve.py), without a kernel
object: what it accepts, what it refuses, and what it sends back."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.hook import serve
from ipcjanitor.hook.serve import KEPT_ENV, Output, listen_fd, parse_request

GOOD = b"ipcjanitor-hook 2\0/usr/bin/ipcjanitor\0hook\0--unit=a.service\0\0SERVICE_RESULT=signal\0"


def test_a_request_spells_the_program_the_arguments_and_the_kept_environment() -> None:
    req = parse_request(GOOD)
    assert req is not None
    assert (req.program, req.args, req.env) == (
        "/usr/bin/ipcjanitor",
        ["hook", "--unit=a.service"],
        {"SERVICE_RESULT": "signal"},
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        GOOD[:-1],  # no final NUL: cut short
        GOOD.replace(b"hook 2", b"hook 1"),  # another protocol (an older launcher's)
        b"ipcjanitor-hook 2\0/usr/bin/ipcjanitor\0hook\0",  # no end of the arguments
        GOOD + b"PYTHONPATH=/home/u\0",  # a name the launcher never keeps
        GOOD + b"IPCJANITOR_POLICY=/tmp/p.toml\0",
        GOOD + b"SERVICE_RESULT=success\0",  # twice: which one?
        GOOD + b"NOEQUALS\0",
    ],
)
def test_anything_else_is_no_request(data: bytes) -> None:
    assert parse_request(data) is None


@given(st.binary(max_size=200))
def test_no_message_crashes_the_parser_or_brings_a_name_it_does_not_keep(data: bytes) -> None:
    req = parse_request(data)
    if req is not None:
        assert set(req.env) <= set(KEPT_ENV)
        assert data.startswith(b"ipcjanitor-hook 2\0")


def test_the_socket_is_taken_only_when_systemd_passed_it_to_this_process() -> None:
    assert listen_fd({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, 42) == 3
    assert listen_fd({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, 42) is None  # inherited
    assert listen_fd({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, 42) is None
    assert listen_fd({}, 42) is None


def test_the_answer_carries_stdout_stderr_and_the_status() -> None:
    out = Output()
    print("note: x", file=out.out)
    print("ipcjanitor: bad", file=out.err)
    assert out.reply(78) == b"X78\nO8\nnote: x\nE16\nipcjanitor: bad\n"  # the status first
    assert Output().reply(0) == b"X0\n"


def test_text_that_is_not_utf8_goes_back_as_its_bytes() -> None:
    out = Output()
    out.out.write(os.fsdecode(b"unit \xff\n"))
    assert out.reply(0) == b"X0\nO7\nunit \xff\n"


def _served(data: bytes, fds: list[int], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """What serve_one answers a launcher that sends data (and fds), the hook not run."""
    ran: list[object] = []

    def run(call: object, pid: int) -> int:
        ran.append((call, pid))
        return 0

    monkeypatch.setattr(serve, "_run", run)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        socket.send_fds(theirs, [data], fds) if fds else theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        reply = serve.serve_one(ours)
        if reply is not None:
            ours.sendall(reply)
        ours.close()
        answer = b"".join(iter(lambda: theirs.recv(4096), b""))
    assert bool(ran) == answer.endswith(b"X0\n")
    return answer


def test_a_hook_for_this_servers_program_is_run(monkeypatch: pytest.MonkeyPatch) -> None:
    program = os.fsencode(sys.argv[0])
    data = GOOD.replace(b"/usr/bin/ipcjanitor", program)
    assert _served(data, [1, 2], monkeypatch) == b"AX0\n"


@pytest.mark.parametrize(
    ("change", "fds"),
    [
        ((b"", b""), [1, 2]),  # /usr/bin/ipcjanitor: not this process's program
        ((b"hook\0", b"scan\0"), [1, 2]),  # not a hook
        ((b"--unit=a.service\0", b"--unit\0"), [1, 2]),  # not in the hook's grammar
        ((b"", b""), [1]),  # one fd only
        ((b"", b""), []),
    ],
)
def test_anything_else_is_left_to_the_launcher(
    change: tuple[bytes, bytes], fds: list[int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = GOOD.replace(*change)
    if fds == [1, 2] and change == (b"", b""):
        assert os.path.realpath(sys.argv[0]) != "/usr/bin/ipcjanitor"
    elif fds == [1, 2]:
        data = data.replace(b"/usr/bin/ipcjanitor", os.fsencode(sys.argv[0]))
    assert _served(data, fds, monkeypatch) == b"AN"


def test_install_hook_says_when_no_hook_server_listens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ipcjanitor.hook.install import _say_if_unserved

    _say_if_unserved(str(tmp_path / "absent.socket"))
    assert "systemctl enable --now ipcjanitor-hook.socket" in capsys.readouterr().out
    listening = socket.socket(socket.AF_UNIX)
    with listening:
        listening.bind(str(tmp_path / "here.socket"))
        _say_if_unserved(str(tmp_path / "here.socket"))
    assert capsys.readouterr().out == ""


def test_doctor_notes_unserved_hooks_only_where_owners_are_bound_to_units(tmp_path: Path) -> None:
    from ipcjanitor.commands.doctor import unserved_note
    from ipcjanitor.policy.load import load_policy

    bound, unbound = tmp_path / "bound.toml", tmp_path / "unbound.toml"
    bound.write_text('[owners.a]\nunit = "a.service"\nkeys = ["0x61040000"]\n')
    unbound.write_text('[owners.a]\nkeys = ["0x61040000"]\n')
    absent = str(tmp_path / "absent.socket")
    (note,) = unserved_note(load_policy(str(bound)), absent)
    assert "systemctl enable --now ipcjanitor-hook.socket" in note
    assert unserved_note(load_policy(str(unbound)), absent) == []
    listening = socket.socket(socket.AF_UNIX)
    with listening:
        listening.bind(str(tmp_path / "here.socket"))
        assert unserved_note(load_policy(str(bound)), str(tmp_path / "here.socket")) == []

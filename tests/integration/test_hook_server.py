"""The hook server (serve-hooks) and its launcher (ipcjanitor-hook), attacked with real
processes: every scenario runs in fresh IPC, pid and mount namespaces with a private tmpfs on
/run, so the socket (/run/ipcjanitor-hook.socket) and the policy are the namespace's alone
(hook_server_scenarios.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from .harness import HERE, ROOT, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]
REMOVED = [["shm", "0x71000001", "t", "removed"]]


def scenario(name: str, *extra: str) -> Any:
    proc = subprocess.run(
        ["unshare", "--ipc", "--mount", "--pid", "--fork", "--mount-proc",
         "sh", "-c", "mount -t tmpfs -o mode=0755 tmpfs /run && mount -t tmpfs -o mode=1777 "
         'tmpfs /dev/shm && mount -t mqueue mqueue /dev/mqueue && exec "$@"', "sh",
         sys.executable, str(HERE / "hook_server_scenarios.py"), name, "-", *extra],
        capture_output=True, text=True, timeout=240, check=False,
        env=dict(os.environ, HOOK_TEST_HOST_RUN_DEV=str(os.stat("/run").st_dev),
                 HOOK_TEST_HOST_SHM_DEV=str(os.stat("/dev/shm").st_dev)),
    )  # fmt: skip
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_launcher_is_built() -> None:
    assert os.access(ROOT / "ipcjanitor" / "ipcjanitor-hook", os.X_OK)


def test_served_decides_as_in_process() -> None:
    r = scenario("served_equals_in_process")
    here, served = r["ways"]["in-process"], r["ways"]["served"]
    assert here["verdicts"] == served["verdicts"] == REMOVED
    assert here["rc"] == served["rc"] == 0 and here["gone"] and served["gone"]
    # proof of the way taken: its notes, and no interpreter exec'd by the launcher
    assert not here["served"] and here["execs"] == 1
    assert served["served"] and served["execs"] == 0
    bad_here, bad_served = r["errors"]["in-process"], r["errors"]["served"]
    assert bad_here["rc"] == bad_served["rc"] == 78
    assert bad_here["stderr"] == bad_served["stderr"]
    assert "t.toml:2: [owners.t] unit" in bad_served["stderr"]
    assert bad_here["kept"] and bad_served["kept"] and bad_served["execs"] == 0


def test_no_socket_runs_in_process() -> None:
    r = scenario("no_socket")
    assert r["rc"] == 0 and r["verdicts"] == REMOVED and r["gone"] and not r["served"]


FALLBACKS = ["silent", "alive_then_close", "alive_then_garbage", "status_999",
             "status_overflow", "status_negative", "status_unterminated",
             "output_length_lies"]  # fmt: skip


def test_a_broken_server_means_in_process_and_the_true_status() -> None:
    r = scenario("fake_servers", *FALLBACKS)
    for name in FALLBACKS:
        got = r[name]
        assert got["asked"] == 1, name
        assert got["rc"] == 0 and got["gone"] and got["in_process"], (name, got)
        assert got["one_document"], (name, got["stdout"])  # printed once
    assert 1.8 < r["silent"]["took"] < 10  # ASK_WAIT_MS, then the hook here
    assert all(r[n]["took"] < 1.5 for n in FALLBACKS if n != "silent")


def test_an_answer_cut_after_its_status_runs_the_hook_once() -> None:
    """The server ended half-way through the output (_die_with, a crash): the status came
    first, so the launcher exits with it, what came of the output printed once; before, the
    status came last and the launcher ran the hook again in-process after printing part."""
    got = scenario("fake_servers", "cut_after_status")["cut_after_status"]
    assert got["rc"] == 0 and got["stdout"] == '{"cut'
    assert not got["gone"]  # this fake ran nothing, and nor did the launcher


def test_another_program_is_not_served() -> None:
    r = scenario("other_program")
    assert r["answer"] == "AN"
    assert r["rc"] == 3 and r["stdout"].startswith("OTHER hook --unit=t.service")
    assert r["kept"]  # neither that program nor the server removed anything


def test_a_blocked_stdout_stalls_only_its_launcher() -> None:
    r = scenario("blocked_stdout_small")
    assert r["second_served"] and r["second_took"] < 1.0 and r["second_gone"]
    assert r["first_rc"] == 0 and r["first_served"] and r["first_removed"] == 1


def test_a_blocked_stdout_with_a_long_answer_stalls_only_its_launcher() -> None:
    """1,500 removals: an answer longer than the socket's buffer. The server must not wait,
    blocked in sending it, for a launcher whose stdout nobody reads."""
    r = scenario("blocked_stdout_large")
    assert r["second_served"] and r["second_took"] < 1.0 and r["second_gone"]
    assert r["first_rc"] == 0 and r["first_served"] and r["first_removed"] == 1500


def test_a_non_root_peer_is_refused_at_once() -> None:
    r = scenario("non_root_peer")
    assert r["client_rc"] == 0 and r["answer"] in ("N", "AN") and r["kept"]
    # and one that connects and sends nothing holds the server for no request's time
    assert r["second_served"] and r["second_took"] < 1.0


def test_hostile_requests_are_not_served() -> None:
    r = scenario("hostile_requests")
    for name in ("oversized", "env_not_kept", "env_twice", "no_fds", "extra_fds", "one_fd",
                 "no_protocol", "not_hook"):  # fmt: skip
        assert r[name] == "AN", (name, r[name])
    assert r["kept"] and r["fds_leaked"] == 0
    # a request half-sent, then nothing: the server is free again after REQUEST_TIMEOUT
    assert r["partial_then_hang"]["served"] and r["partial_then_hang"]["gone"]
    # one byte a second: REQUEST_TIMEOUT bounds the whole request, not each read
    assert r["drip"]["served"] and r["drip"]["gone"]


def test_no_environment_decides() -> None:
    r = scenario("environment_decides_nothing")
    assert r["bare_in_process"]["verdicts"] == r["bare_served"]["verdicts"]
    assert r["launcher_env"] == {"verdicts": REMOVED, "served": True}
    assert r["request_env"] == "AN" and r["kept_after_request"]
    assert not r["marker"] and not r["evil_lock_dir"]


def test_a_killed_in_process_hook_removes_nothing() -> None:
    assert scenario("launcher_killed_in_process")["kept"]


def test_a_killed_launcher_served_removes_nothing() -> None:
    """SIGKILLed while its hook waits for the run lock (as systemd kills what is left of a
    unit's stop), the launcher takes the served hook with it, as it would the in-process
    one: nothing removed after the stop the hook belongs to is over."""
    assert scenario("launcher_killed_served")["kept"]


def test_a_launcher_of_another_ipc_namespace_is_not_served() -> None:
    """In-process, its hook judges its own namespace's objects; served, it judged the
    server's: what its namespace does not hold must stay, and it is run in-process."""
    r = scenario("other_ipc_namespace")
    assert r["rc"] == 0 and r["verdicts"] == [] and not r["served"] and r["kept"]


def test_a_launcher_with_another_dev_shm_is_not_served() -> None:
    """In-process, its hook judges the /dev/shm it sees; served, it judged the server's."""
    r = scenario("other_dev_shm")
    assert r["rc"] == 0 and not r["served"] and r["kept"]
    assert ["posix-shm", "tp_1", "tp", "removed"] not in r["verdicts"]

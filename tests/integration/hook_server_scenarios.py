"""Scenarios for the hook server (ipcjanitor/hook/serve.py, ipcjanitor-hook.c), each run by
test_hook_server.py inside fresh IPC, pid and mount namespaces with a private tmpfs on /run:
the socket, /run/ipcjanitor-hook.socket, is this namespace's alone, never the host's.

Usage: hook_server_scenarios.py SCENARIO POLICY_FILE (POLICY_FILE unused: the scenarios write
their own policy in a 0755 root-owned directory under the private /run). Prints one JSON line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from tests.integration import sysv

ROOT = Path(__file__).resolve().parent.parent.parent
PROGRAM = str(ROOT / ".venv" / "bin" / "ipcjanitor")
LAUNCHER = str(ROOT / "ipcjanitor" / "ipcjanitor-hook")
SOCK = "/run/ipcjanitor-hook.socket"
POLICY_DIR = "/run/hook-server-policy"
KEYS = 0x71000000
POLICY = f"""\
[owners.t]
unit = "t.service"
keys = ["{KEYS:#x}-{KEYS + 0xFFFF:#x}"]
min_age = "0s"
"""
SERVED_NOTE = "the hook server reads its launcher's"
IN_PROCESS_NOTE = "the hook runs in it"
PROTOCOL = b"ipcjanitor-hook 2"


def _guard() -> None:
    """Refuse to run on the host's /run: it must be this mount namespace's fresh tmpfs."""
    if str(os.stat("/run").st_dev) == os.environ.get("HOOK_TEST_HOST_RUN_DEV", ""):
        raise SystemExit("refusing: /run is the host's")


def write_policy(text: str = POLICY, where: str = POLICY_DIR) -> str:
    os.makedirs(where, mode=0o755, exist_ok=True)
    os.chmod(where, 0o755)
    for old in Path(where).glob("*.toml"):
        old.unlink()
    Path(where, "t.toml").write_text(text)
    return where


def leak(key: int) -> None:
    """A segment made by a real process that then exits."""
    sysv.run_and_exit(lambda: sysv.shmget(key))


def segments() -> set[int]:
    keys = set()
    for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
        keys.add(int(line.split()[0]) & 0xFFFFFFFF)
    return keys


def hook_argv(program: str = PROGRAM, json_out: bool = True) -> list[str]:
    argv = [LAUNCHER, program, "hook", "--unit=t.service", f"--policy={POLICY_DIR}"]
    return [*argv, "--json"] if json_out else argv


def launch(
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the launcher, its stdout and stderr files (a server holding the fds it was passed
    keeps no pipe open); return it and how long it took."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            argv or hook_argv(),
            env=env
            or {
                "PATH": "/usr/bin:/bin",
                "SERVICE_RESULT": "signal",
                "EXIT_CODE": "killed",
                "EXIT_STATUS": "KILL",
            },
            stdout=out,
            stderr=err,
            timeout=timeout,
            check=False,
        )
        took = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    return done, took


def verdicts(stdout: str) -> list[tuple[str, str, str | None, str]]:
    """PURE: what a --json run decided, without what differs run to run (ids, pids, times)."""
    report = json.loads(stdout)
    return sorted(
        (o["kind"], o.get("key", o.get("name")), o["owner"], o["verdict"])
        for o in report["objects"]
    )


def notes(stdout: str) -> list[str]:
    return list(json.loads(stdout)["summary"]["notes"])


def served(stdout: str) -> bool:
    return any(SERVED_NOTE in n for n in notes(stdout))


class Server:
    """`ipcjanitor serve-hooks` under systemd-socket-activate, on this namespace's socket."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.log = open("/run/serve-hooks.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", SOCK, PROGRAM, "serve-hooks"],
            stdout=self.log,
            stderr=self.log,
            env=env or {"PATH": "/usr/bin:/bin"},
        )
        wait_for(lambda: os.path.exists(SOCK))

    def stop(self) -> str:
        self.proc.kill()  # by its pid: the server we started (socket-activate execs it)
        self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCK)
        self.log.seek(0)
        return self.log.read()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@contextlib.contextmanager
def server(env: dict[str, str] | None = None) -> Iterator[Server]:
    s = Server(env)
    try:
        yield s
    finally:
        s.stop()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def warm(s: Server) -> None:
    """One request served, so the server is past its first (slow, cold) import."""
    proc, _ = launch()
    assert proc.returncode == 0 and served(proc.stdout), proc


@contextlib.contextmanager
def fake_server(behave: Callable[[socket.socket], None]) -> Iterator[list[int]]:
    """A listener on SOCK that treats every connection with `behave`; yields the count."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(SOCK)
    listener.listen(8)
    count = [0]
    conns: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            count[0] += 1
            conns.append(conn)
            threading.Thread(target=behave, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield count
    finally:
        listener.close()
        os.unlink(SOCK)
        for c in conns:
            c.close()


def request(
    fields: list[bytes] | None = None,
    fds: list[int] | None = None,
    raw: bytes | None = None,
) -> bytes:
    """A hand-made request to the real server: its whole answer (until it closes)."""
    if fields is None:
        fields = [PROTOCOL, PROGRAM.encode(), b"hook", b"--unit=t.service",
                  f"--policy={POLICY_DIR}".encode(), b"--json", b""]  # fmt: skip
    data = raw if raw is not None else b"".join(f + b"\0" for f in fields)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(SOCK)
    with s:
        if fds is None:
            fds = [1, 2]
        try:
            if fds:
                socket.send_fds(s, [data[:4096]], fds)
                s.sendall(data[4096:])
            else:
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = b""
        with contextlib.suppress(ConnectionResetError):  # it closed, our request unread
            while chunk := s.recv(65536):
                answer += chunk
        return answer


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {}


def scenario(f: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    SCENARIOS[f.__name__] = f
    return f


def _strace_execs(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """The launcher run under strace: its result and how many execve(2) its tree made."""
    out = "/run/strace.out"
    proc, _ = launch(["strace", "-f", "-qq", "-e", "trace=execve", "-o", out, *argv])
    execs = [line for line in Path(out).read_text().splitlines() if "execve(" in line]
    return proc, len(execs) - 1  # strace's own exec of the launcher


@scenario
def served_equals_in_process() -> dict[str, Any]:
    ways: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for way in ("in-process", "served"):
        with server() if way == "served" else contextlib.nullcontext():
            if way == "served":
                launch()  # the server warm: past its first, cold, imports
            write_policy()
            leak(KEYS + 1)
            proc, execs = _strace_execs(hook_argv())
            ways[way] = {"rc": proc.returncode, "verdicts": verdicts(proc.stdout),
                         "served": served(proc.stdout), "execs": execs,
                         "gone": KEYS + 1 not in segments()}  # fmt: skip
            write_policy('[owners.t]\nunit = 5\nkeys = ["0x71000000"]\n')
            leak(KEYS + 3)
            proc, execs = _strace_execs(hook_argv())
            errors[way] = {"rc": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout,
                           "execs": execs, "kept": KEYS + 3 in segments()}  # fmt: skip
            write_policy()
    return {"ways": ways, "errors": errors}


@scenario
def no_socket() -> dict[str, Any]:
    leak(KEYS + 1)
    proc, took = launch()
    return {"rc": proc.returncode, "verdicts": verdicts(proc.stdout), "took": took,
            "served": served(proc.stdout), "gone": KEYS + 1 not in segments()}  # fmt: skip


def _fallback(behave: Callable[[socket.socket], None]) -> dict[str, Any]:
    leak(KEYS + 1)
    with fake_server(behave) as count:
        proc, took = launch()
    try:
        one_document = verdicts(proc.stdout) is not None
    except ValueError:
        one_document = False
    return {"rc": proc.returncode, "took": took, "asked": count[0], "stdout": proc.stdout,
            "one_document": one_document, "gone": KEYS + 1 not in segments(),
            "in_process": one_document and not served(proc.stdout)}  # fmt: skip


def _answer(reply: bytes, then_close: bool = True) -> Callable[[socket.socket], None]:
    def behave(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(reply)
            if not then_close:
                time.sleep(30)
            conn.shutdown(socket.SHUT_RDWR)

    return behave


FAKE_ANSWERS = {
    "silent": (b"", False),
    "alive_then_close": (b"A", True),
    "alive_then_garbage": (b"Agarbage\n", True),
    "status_999": (b"AX999\n", True),
    "status_overflow": (b"AX" + b"9" * 30 + b"\n", True),
    "status_negative": (b"AX-1\n", True),
    "status_unterminated": (b"AX0", True),
    "output_length_lies": (b"AO99999\nshort", True),
    "cut_after_status": (b'AX0\nO99\n{"cut', True),
}


@scenario
def fake_servers() -> dict[str, Any]:
    names = sys.argv[3:] or list(FAKE_ANSWERS)
    return {name: _fallback(_answer(*FAKE_ANSWERS[name])) for name in names}


@scenario
def other_program() -> dict[str, Any]:
    os.makedirs("/run/other", mode=0o755, exist_ok=True)
    other = Path("/run/other/ipcjanitor")
    other.write_text('#!/bin/sh\necho OTHER "$@"\nexit 3\n')
    other.chmod(0o755)
    with server() as s:
        warm(s)
        leak(KEYS + 1)
        proc, _ = launch(hook_argv(str(other)))
        answer = request([PROTOCOL, str(other).encode(), b"hook", b"--unit=t.service", b""])
    return {"rc": proc.returncode, "stdout": proc.stdout, "answer": answer.decode(),
            "kept": KEYS + 1 in segments()}  # fmt: skip


def _full_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(w, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, b"x" * 65536)
    os.set_blocking(w, True)
    return r, w


def _blocked_then_other(many: int) -> dict[str, Any]:
    """Launcher 1's stdout a full pipe nobody reads (its hook removes `many` segments, so
    its answer is long); then launcher 2, which must be served promptly."""
    keys = [KEYS + 0x100 + i for i in range(many)]
    with server() as s:
        warm(s)
        sysv.run_and_exit(lambda: [sysv.shmget(k, 1) for k in keys])
        r, w = _full_pipe()
        first = subprocess.Popen(hook_argv(), stdout=w, stderr=subprocess.DEVNULL,
                                 env={"PATH": "/usr/bin:/bin"})  # fmt: skip
        os.close(w)
        wait_for(lambda: not set(keys) & segments(), 20)
        time.sleep(0.3)  # the server has its answer ready (or is stuck sending it)
        leak(KEYS + 1)
        second, took = launch(timeout=60)
        drained = bytearray()
        threading.Thread(target=lambda: drained.extend(_read_all(r)), daemon=True).start()
        first_rc = first.wait(60)
        time.sleep(0.2)
    out = bytes(drained).lstrip(b"x").decode()
    return {"second_rc": second.returncode, "second_took": took,
            "second_served": served(second.stdout), "second_gone": KEYS + 1 not in segments(),
            "first_rc": first_rc, "first_removed": len(verdicts(out)),
            "first_served": served(out)}  # fmt: skip


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


@scenario
def blocked_stdout_small() -> dict[str, Any]:
    return _blocked_then_other(1)


@scenario
def blocked_stdout_large() -> dict[str, Any]:
    return _blocked_then_other(1500)


NON_ROOT_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
data = b"".join(f.encode() + b"\\0" for f in sys.argv[2:]) + b"\\0"
answer = b""
try:  # a server that refuses before reading closes on an unread request
    socket.send_fds(s, [data], [1, 2])
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass
try:
    while chunk := s.recv(65536):
        answer += chunk
except ConnectionResetError:
    pass
print(answer.decode(errors="replace"), end="")
"""


@scenario
def non_root_peer() -> dict[str, Any]:
    with server() as s:
        warm(s)
        leak(KEYS + 1)
        os.chmod(SOCK, 0o666)  # the unit makes it 0600: here the server itself must refuse
        client = ["setpriv", "--reuid", "4402", "--regid", "4402", "--clear-groups",
                  sys.executable, "-c", NON_ROOT_CLIENT, SOCK, PROTOCOL.decode(), PROGRAM,
                  "hook", "--unit=t.service", f"--policy={POLICY_DIR}", "--json"]  # fmt: skip
        proc = subprocess.run(client, capture_output=True, text=True, timeout=20, check=False)
        kept = KEYS + 1 in segments()
        # a non-root peer that connects and sends nothing must not hold the server either
        hang = subprocess.Popen(["setpriv", "--reuid", "4402", "--regid", "4402",
                                 "--clear-groups", sys.executable, "-c",
                                 "import socket,sys,time; s=socket.socket(socket.AF_UNIX);"
                                 "s.connect(sys.argv[1]); s.send(b'ipc'); time.sleep(30)",
                                 SOCK])  # fmt: skip
        time.sleep(0.3)
        leak(KEYS + 2)
        second, took = launch()
        hang.kill()
        hang.wait()
    return {"answer": proc.stdout, "client_rc": proc.returncode, "stderr": proc.stderr,
            "kept": kept, "second_served": served(second.stdout),
            "second_took": took}  # fmt: skip


def _hang_then_launch(send: Callable[[socket.socket], None], wait: float) -> dict[str, Any]:
    """A root client that sends `send` and holds on; after `wait` s a launcher must be served."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    stop = threading.Event()
    t = threading.Thread(target=lambda: send_until(s, send, stop), daemon=True)
    t.start()
    time.sleep(wait)
    leak(KEYS + 2)
    proc, took = launch()
    stop.set()
    s.close()
    return {"served": served(proc.stdout), "took": took, "gone": KEYS + 2 not in segments()}


def send_until(
    s: socket.socket, send: Callable[[socket.socket], None], stop: threading.Event
) -> None:
    with contextlib.suppress(OSError):
        while not stop.is_set():
            send(s)
            stop.wait(1.0)


@scenario
def hostile_requests() -> dict[str, Any]:
    base = [PROTOCOL, PROGRAM.encode(), b"hook", b"--unit=t.service",
            f"--policy={POLICY_DIR}".encode(), b"--json", b""]  # fmt: skip
    out: dict[str, Any] = {}
    with server() as s:
        warm(s)
        leak(KEYS + 1)
        fds_before = s.fds()
        out["oversized"] = request([*base[:-1], b"x" * 70000, b""]).decode()
        out["env_not_kept"] = request([*base, b"IPCJANITOR_POLICY=/run/x"]).decode()
        out["env_twice"] = request([*base, b"EXIT_CODE=killed", b"EXIT_CODE=exited"]).decode()
        out["no_fds"] = request(base, fds=[]).decode()
        out["extra_fds"] = request(base, fds=[1, 2, 0]).decode()[:2]
        out["one_fd"] = request(base, fds=[1]).decode()
        out["no_protocol"] = request([b"ipcjanitor-hook 1", *base[1:]]).decode()
        out["not_hook"] = request([PROTOCOL, PROGRAM.encode(), b"clean", b""]).decode()
        out["kept"] = KEYS + 1 in segments()
        out["fds_leaked"] = s.fds() - fds_before
        once = b"".join(f + b"\0" for f in base)[:20]
        sent = [False]

        def send_once(c: socket.socket) -> None:
            if not sent[0]:
                sent[0] = bool(c.send(once))

        out["partial_then_hang"] = _hang_then_launch(send_once, 2.5)

        # one byte a second, forever: the request's whole time is bounded, not each read's
        def drip(c: socket.socket) -> None:
            c.send(b"i")

        out["drip"] = _hang_then_launch(drip, 2.5)
        out["after_all"] = s.fds() - fds_before
    return out


@scenario
def environment_decides_nothing() -> dict[str, Any]:
    evil = write_policy(POLICY.replace('min_age = "0s"', 'min_age = "1h"'), "/run/evil-policy")
    os.makedirs("/run/evil-py", mode=0o755, exist_ok=True)
    Path("/run/evil-py/sitecustomize.py").write_text("open('/run/evil-ran', 'w').close()\n")
    out: dict[str, Any] = {}
    env = {
        "PATH": "/usr/bin:/bin",
        "IPCJANITOR_POLICY": evil,
        "PYTHONPATH": "/run/evil-py",
        "IPCJANITOR_LOCK_DIR": "/run/evil-lock",
        "XDG_RUNTIME_DIR": "/run/evil-lock",
    }
    bare = [LAUNCHER, PROGRAM, "hook", "--unit=t.service", "--json"]  # no --policy
    leak(KEYS + 3)
    proc, _ = launch(bare)
    out["bare_in_process"] = {"verdicts": verdicts(proc.stdout), "served": served(proc.stdout)}
    with server(env) as s:  # the server's own environment must not decide either
        warm(s)
        proc, _ = launch(bare)
        out["bare_served"] = {"verdicts": verdicts(proc.stdout), "served": served(proc.stdout)}
        leak(KEYS + 1)
        proc, _ = launch(hook_argv(), env=env)
        out["launcher_env"] = {"verdicts": verdicts(proc.stdout), "served": served(proc.stdout)}
        leak(KEYS + 2)
        answer = request(
            [
                PROTOCOL,
                PROGRAM.encode(),
                b"hook",
                b"--unit=t.service",
                f"--policy={POLICY_DIR}".encode(),
                b"",
                b"PYTHONPATH=/run/evil-py",
            ]
        )
        out["request_env"] = answer.decode()
        out["kept_after_request"] = KEYS + 2 in segments()
    out["marker"] = os.path.exists("/run/evil-ran")
    out["evil_lock_dir"] = os.path.exists("/run/evil-lock")
    return out


def _lock_held() -> int:
    """The run lock of this IPC namespace, held here (engine/lock.py), so a hook waits."""
    ns = os.readlink("/proc/self/ns/ipc").strip("ipc:[]")
    os.makedirs("/run/ipcjanitor", mode=0o700, exist_ok=True)
    fd = os.open(f"/run/ipcjanitor/run-ipc-{ns}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _killed_while_waiting() -> dict[str, Any]:
    """The hook waits for the run lock; its launcher is SIGKILLed (as systemd kills what is
    left of a unit's stop); the lock is then released."""
    leak(KEYS + 1)
    fd = _lock_held()
    launcher = subprocess.Popen(hook_argv(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    time.sleep(1.0)  # offered, and waiting for the lock (WAIT_LIMIT is 5 s)
    launcher.kill()  # by its pid: ours
    launcher.wait()
    os.close(fd)
    time.sleep(1.5)
    return {"kept": KEYS + 1 in segments()}


@scenario
def launcher_killed_in_process() -> dict[str, Any]:
    return _killed_while_waiting()


@scenario
def launcher_killed_served() -> dict[str, Any]:
    with server() as s:
        warm(s)
        return _killed_while_waiting()


@scenario
def other_ipc_namespace() -> dict[str, Any]:
    """A launcher in an IPC namespace of its own (a drop-in without "+" in a PrivateIPC=
    unit) asks the server, which is in this one."""
    with server() as s:
        warm(s)
        leak(KEYS + 1)
        proc, _ = launch(["unshare", "--ipc", *hook_argv()])
    return {"rc": proc.returncode, "verdicts": verdicts(proc.stdout),
            "served": served(proc.stdout), "kept": KEYS + 1 in segments()}  # fmt: skip


@scenario
def other_dev_shm() -> dict[str, Any]:
    """A launcher whose /dev/shm is not the server's (a drop-in without "+" in a unit with a
    /dev/shm of its own) asks the server: its POSIX objects are not the server's."""
    if str(os.stat("/dev/shm").st_dev) == os.environ.get("HOOK_TEST_HOST_SHM_DEV", ""):
        raise SystemExit("refusing: /dev/shm is the host's")
    write_policy(POLICY + '\n[owners.tp]\nunit = "t.service"\nkinds = ["posix-shm"]\n'
                 'names = ["tp_*"]\nuid = "root"\nmin_age = "0s"\n')  # fmt: skip
    with server() as s:
        warm(s)
        Path("/dev/shm/tp_1").write_bytes(b"x")
        own_shm = 'mount -t tmpfs tmpfs /dev/shm && exec "$@"'
        proc, _ = launch(["unshare", "--mount", "sh", "-c", own_shm, "sh", *hook_argv()])
    return {"rc": proc.returncode, "verdicts": verdicts(proc.stdout),
            "served": served(proc.stdout), "kept": Path("/dev/shm/tp_1").exists()}  # fmt: skip


def main() -> None:
    _guard()
    write_policy()
    result = SCENARIOS[sys.argv[1]]()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

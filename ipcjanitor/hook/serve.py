"""`serve-hooks`: the hook server, so a crashing service's restart waits for no interpreter.

Every hook used to start CPython, import the policy parser and the engine, and only then
look: ~40 ms of a SIGKILLed service's restart before any work (bench/README.md). With
ipcjanitor-hook.socket enabled, ipcjanitor-hook (the ExecStopPost= launcher) connects to
SOCKET_PATH instead, and this server — started by the socket, warm after its first request,
gone after IDLE_EXIT seconds without one — runs the same hook for it:

- The launcher sends one message: PROTOCOL, its program, the hook's arguments, what it kept
  of the environment, each NUL-terminated (an empty field after the arguments), and its
  stdout and stderr as SCM_RIGHTS. The answer is b"A" at once (alive), then either b"N" (not
  served here: the launcher execs the hook itself, as without the socket), or b"X<code>\\n",
  the hook's exit status, then what it printed (b"O<length>\\n" and stdout's bytes,
  b"E<length>\\n" and stderr's), which the launcher writes to its own. A server that never
  answers, or dies before the status, makes the launcher exec the hook itself too
  (ipcjanitor-hook.c): a hook is never lost to the server. The status comes first so that
  an answer cut after it (the server ended, _die_with) loses output, as a hook killed while
  printing would, and never runs the hook a second time, printing part of it twice.
  Protocol 2: a launcher of protocol 1 (status last) is answered b"N", and runs in-process.
- Only root may ask (SO_PEERCRED; the socket is 0600 root's too), only a `hook` command line
  (hook_call's grammar), and only for this server's own program: a drop-in naming another
  ipcjanitor runs that one, in-process.
- The hook decides from the launcher's cgroup, which systemd made the unit's: the launcher
  is the one process of the unit excluded (rule 2; hook_pid through the engine), as the hook
  excludes itself when it runs in-process. Its fds 1 and 2 are the launcher's (the unit's
  journal stream, compared with JOURNAL_STREAM as in-process), but what it prints goes back
  in the answer for the launcher to write (Output). It reads the stop's SERVICE_RESULT,
  EXIT_CODE, EXIT_STATUS from what the launcher sent; its journal records name the unit
  (OBJECT_SYSTEMD_UNIT=), as in-process. Requests are served one at a time, each with the
  policy read afresh; each answer is sent from a thread of its own (a launcher whose stdout
  blocks takes it at its pace, holding no other), and a non-root peer is refused, and a
  request must be whole, within REQUEST_TIMEOUT, before anything else is read.
- The served hook dies with its launcher, as an in-process one does (_die_with): a launcher
  gone before its hook is done (killed with what was left of its unit's stop) ends the
  server, which the socket starts again for the next request.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import select
import socket
import struct
import sys
import threading
import time
import traceback

from .gate import hook_call, run_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from .gate import HookCall

SOCKET_PATH = "/run/ipcjanitor-hook.socket"  # units/ipcjanitor-hook.socket, ipcjanitor-hook.c
PROTOCOL = b"ipcjanitor-hook 2"
IDLE_EXIT = 600.0  # seconds without a request, then exit: the socket starts the server again
REQUEST_TIMEOUT = 2.0  # the launcher sends everything in one message, at once
MAX_REQUEST = 65536
KEPT_ENV = ("SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS", "INVOCATION_ID", "JOURNAL_STREAM")
SD_LISTEN_FDS_START = 3
LAUNCHER_GONE = 75  # EX_TEMPFAIL: the server ends with its launcher's hook (_die_with)


class Request:
    """One launcher's request, as read from its message."""

    __slots__ = ("args", "env", "program")

    def __init__(self, program: str, args: list[str], env: dict[str, str]) -> None:
        self.program, self.args, self.env = program, args, env


def parse_request(data: bytes) -> Request | None:
    """PURE: the request a message spells, or None for anything else (never served)."""
    if not data.endswith(b"\0"):
        return None
    fields = [os.fsdecode(f) for f in data[:-1].split(b"\0")]
    if len(fields) < 3 or fields[0] != os.fsdecode(PROTOCOL) or "" not in fields[2:]:
        return None
    end = fields.index("", 2)
    env: dict[str, str] = {}
    for entry in fields[end + 1 :]:
        name, eq, value = entry.partition("=")
        if not eq or name not in KEPT_ENV or name in env:
            return None
        env[name] = value
    return Request(fields[1], fields[2:end], env)


def listen_fd(env: Mapping[str, str], pid: int) -> int | None:
    """PURE: the socket systemd passed (sd_listen_fds(3): LISTEN_PID ours, LISTEN_FDS 1)."""
    if env.get("LISTEN_PID") != str(pid):
        return None
    return SD_LISTEN_FDS_START if env.get("LISTEN_FDS") == "1" else None


def main(argv: Sequence[str]) -> int:
    """`ipcjanitor serve-hooks`: serve launchers on the socket systemd passed."""
    gc.enable()  # a long-lived process: entry.py's one-shot setting does not fit it
    if argv:
        print("usage: ipcjanitor serve-hooks (started by ipcjanitor-hook.socket)", file=sys.stderr)
        return 64
    fd = listen_fd(os.environ, os.getpid())
    if fd is None:
        print(
            "ipcjanitor serve-hooks: no socket was passed (LISTEN_FDS); it is started by "
            "ipcjanitor-hook.socket (systemctl enable --now ipcjanitor-hook.socket)",
            file=sys.stderr,
        )
        return 64
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    serve(socket.socket(fileno=fd), IDLE_EXIT)
    return 0


def serve(listener: socket.socket, idle: float) -> None:
    """Serve requests one at a time until none came for `idle` seconds."""
    listener.settimeout(idle)
    senders: list[threading.Thread] = []
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            for sender in senders:  # no launcher loses its answer to the idle exit
                sender.join()
            return
        try:
            reply = serve_one(conn)
        except Exception:  # the launcher, seeing no status, runs the hook itself
            traceback.print_exc()
            reply = None
        if reply is None:
            conn.close()
            continue
        senders = [t for t in senders if t.is_alive()]
        senders.append(threading.Thread(target=_send, args=(conn, reply)))
        senders[-1].start()


def _send(conn: socket.socket, reply: bytes) -> None:
    """The answer, at the pace its launcher takes it: one whose stdout blocks (a pipe nobody
    reads) reads no more of it until that write returns, and that must stall no other."""
    with conn:
        try:
            conn.settimeout(None)
            conn.sendall(reply)
        except OSError:  # the launcher is gone: nobody to tell
            pass


def serve_one(conn: socket.socket) -> bytes | None:
    """One launcher: its hook run; the answer to send it (None: it was sent, if any)."""
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    conn.settimeout(REQUEST_TIMEOUT)
    if uid != 0:  # refused before its request is read: a peer that sends nothing holds nobody
        conn.sendall(b"AN")
        return None
    conn.sendall(b"A")
    data, fds = _receive(conn, time.monotonic() + REQUEST_TIMEOUT)
    try:
        request = parse_request(data) if len(fds) == 2 else None
        ours = request is not None and _ours(request.program) and _sees_as_server(pid)
        call = hook_call(request.args) if request and ours else None
        if request is None or call is None:
            conn.sendall(b"N")
            return None
        wake = os.pipe()
        watcher = threading.Thread(target=_die_with, args=(conn, wake[0]), daemon=True)
        watcher.start()
        try:
            with _as_launcher(fds, request.env) as output:
                code = _run(call, pid)
        finally:
            os.write(wake[1], b"!")
            watcher.join()  # its poll holds the socket open: the launcher's EOF waits for it
            for fd in wake:
                os.close(fd)
        return output.reply(code)
    finally:
        for fd in fds:
            os.close(fd)


def _die_with(conn: socket.socket, wake: int) -> None:
    """End the server if the launcher is gone before its hook is done (`wake` readable): an
    in-process hook is killed with its launcher (systemd's kill of what is left of the
    unit's stop, or the launcher's own RUN_WAIT_MS), and the served one must not go on
    removing after the stop it belongs to is over. The launcher shut only its sending side:
    POLLHUP is its close. Launchers waiting meanwhile see no answer and run their hooks."""
    watch = select.poll()
    watch.register(conn.fileno(), 0)  # POLLHUP and POLLERR are reported regardless
    watch.register(wake, select.POLLIN)
    events = dict(watch.poll())
    if wake not in events:
        os._exit(LAUNCHER_GONE)


def _receive(conn: socket.socket, deadline: float) -> tuple[bytes, list[int]]:
    """The launcher's message and the fds passed with it (it shuts its side after it), all
    by `deadline` (TimeoutError): a peer sending a byte at a time holds the server no longer.
    Room for one fd more than the two: a request with more is refused, not cut to two."""
    data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    chunks = [data]
    size = len(data)
    try:
        while data and size <= MAX_REQUEST:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request took longer than REQUEST_TIMEOUT")
            conn.settimeout(left)
            data = conn.recv(MAX_REQUEST)
            chunks.append(data)
            size += len(data)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return (b"".join(chunks) if size <= MAX_REQUEST else b""), list(fds)


def _sees_as_server(pid: int) -> bool:
    """The launcher's IPC namespace, /dev/shm and /dev/mqueue are the server's: its hook
    judges the objects it sees (a drop-in without "+" in a PrivateIPC= unit, or one with a
    /dev/shm of its own, runs in the unit's), never the server's."""

    there = f"/proc/{pid}"
    return os.path.isdir(there) and all(
        _identity(mine) == _identity(there + theirs)
        for mine, theirs in (("/proc/self/ns/ipc", "/ns/ipc"), ("/dev/shm", "/root/dev/shm"),
                             ("/dev/mqueue", "/root/dev/mqueue"))
    )  # fmt: skip


def _identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of path; None where it cannot be stat'ed (both None: the same)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def unserved(socket_path: str = SOCKET_PATH) -> str | None:
    """What install-hook and doctor say when no hook server listens on socket_path."""
    if os.path.exists(socket_path):
        return None
    return (
        f"no hook server listens on {socket_path}: each hook starts its own interpreter "
        "(~70 ms of every restart, bench/README.md); `systemctl enable --now "
        "ipcjanitor-hook.socket` serves them warm"
    )


def _ours(program: str) -> bool:
    """The launcher asks for this server's own program (the path its drop-in names)."""
    try:
        return os.path.samefile(program, sys.argv[0])
    except OSError:
        return False


class Output:
    """What one hook run printed, sent back for the launcher to write itself: a launcher's
    stdout that blocks (a pipe nobody reads) then stalls that launcher alone, as an
    in-process hook would be stalled, never the server and every other unit's hook."""

    def __init__(self) -> None:
        self.bytes = io.BytesIO(), io.BytesIO()
        self.out, self.err = (
            io.TextIOWrapper(b, "utf-8", "surrogateescape", write_through=True) for b in self.bytes
        )

    def reply(self, code: int) -> bytes:
        """PURE: the answer: the exit status, then stdout's bytes and stderr's."""
        parts = [b"X%d\n" % code]
        for tag, stream in zip((b"O", b"E"), self.bytes, strict=True):
            data = stream.getvalue()
            if data:
                parts.append(b"%s%d\n%s" % (tag, len(data), data))
        return b"".join(parts)


@contextlib.contextmanager
def _as_launcher(fds: list[int], env: dict[str, str]) -> Iterator[Output]:
    """For one hook run: fds 1 and 2 the launcher's (what the hook compares with
    JOURNAL_STREAM), what it prints kept for the reply, the stop's variables the launcher's."""
    saved = [os.dup(1), os.dup(2)]
    before = {name: os.environ.get(name) for name in KEPT_ENV}
    streams = sys.stdout, sys.stderr
    for stream in streams:
        stream.flush()
    output = Output()
    try:
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        sys.stdout, sys.stderr = output.out, output.err
        for name in KEPT_ENV:
            os.environ.pop(name, None)
        os.environ.update(env)
        yield output
    finally:
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run(call: HookCall, pid: int) -> int:
    from ..accounts import user_name  # noqa: PLC0415

    user_name.cache_clear()  # a user renamed since the last request reads as it is now
    return run_call(call, hook_pid=pid)

"""The harness's world: the worker processes, the objects they made, and what each holds.

Runs INSIDE the private namespaces (outside.py), as their pid 1. Every worker is a real
process (worker.py) driven over its own Unix socket; the world knows exactly which process
holds what, because it told each one what to do and read every answer. Holding is what the
kernel can show, the contract's evidence of use (design.md, rule 3): an attachment, a
mapping, an open fd, a task blocked on the object, or a recorded pid (shm cpid/lpid, sempid,
msg lspid/lrpid) that belongs to the live process that recorded it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.adversary import kernel

WORKER = Path(__file__).with_name("worker.py")
ANSWER_TIMEOUT = 10.0
SYSV = ("shm", "sem", "msg")


@dataclass
class Obj:
    label: str
    kind: str  # shm sem msg posix-shm posix-sem posix-mq
    claimed: bool
    creator: str
    bound: bool = False  # claimed by the owner bound to a unit (oracle.UNIT), not the other
    key: int = 0  # System V
    id: int | None = None
    name: str = ""  # POSIX: as sem_open/mq_open/the /dev/shm path below /dev/shm take it
    ino: int | None = None
    nsems: int = 0
    count: int = 0  # posix-sem value, posix-mq messages (the model's)
    gone: str | None = None  # "janitor" (reported removed), "program" (its own IPC_RMID/unlink)
    held_at_removal: list[str] = field(default_factory=list)
    recorded: dict[str, int] = field(default_factory=dict)  # last read: field -> pid

    def path(self) -> str:
        if self.kind == "posix-mq":
            return f"/dev/mqueue/{self.name}"
        return f"/dev/shm/sem.{self.name}" if self.kind == "posix-sem" else f"/dev/shm/{self.name}"

    def describe(self) -> str:
        if self.kind in SYSV:
            return f"{self.kind} {self.label} key 0x{self.key:08x} id {self.id}"
        return f"{self.kind} {self.label} {self.name!r} inode {self.ino}"


@dataclass
class Pending:
    """A command a worker has not answered: it sleeps in one of `calls` on `obj`."""

    cmd: dict[str, Any]
    step: int
    obj: str
    calls: frozenset[int]


@dataclass
class Worker:
    label: str
    pid: int
    sock: socket.socket
    proc: subprocess.Popen[bytes] | None
    parent: str | None
    buf: bytes = b""
    alive: bool = True
    pending: Pending | None = None
    handles: dict[str, tuple[str, str]] = field(default_factory=dict)  # h -> (how, obj label)
    acted: set[tuple[str, str]] = field(default_factory=set)  # (obj label, recorded field)
    reused: str | None = None  # the dead worker whose pid it was given
    tid: int | None = None  # the thread that serves, once the leader has ended (leader_exit)

    def idle(self) -> bool:
        return self.alive and self.pending is None


class HarnessError(Exception):
    """The harness itself failed (not a finding about ipcjanitor)."""


class World:
    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.workers: dict[str, Worker] = {}
        self.objs: dict[str, Obj] = {}
        self.violations: list[dict[str, Any]] = []
        self.model_errors: list[str] = []
        self.stats: dict[str, int] = {}
        self.step_no = 0
        # Whether every step of the wall clock is on record for the janitor (clock.coverage):
        # only with ipcjanitor-clock.timer active under systemd, so never in these namespaces
        self.clock_recorded = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sockpath = str(rundir / "workers.sock")
        self.listener.bind(self.sockpath)
        self.listener.listen(8)
        self.listener.settimeout(ANSWER_TIMEOUT)
        # errors answered while a concurrent clean runs, judged once it is known what it removed
        self.deferred: list[tuple[Worker, dict[str, Any], dict[str, Any], Obj | None]] | None = None

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    def violation(self, what: str, **detail: Any) -> None:
        self.violations.append({"step": self.step_no, "what": what, **detail})

    def model_error(self, text: str) -> None:
        self.model_errors.append(f"step {self.step_no}: {text}")

    def live(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.alive]

    def by_pid(self, pid: int) -> Worker | None:
        return next((w for w in self.live() if w.pid == pid), None)

    # workers ----------------------------------------------------------------------------
    def _hello(self, label: str) -> Worker:
        conn, _ = self.listener.accept()
        w = Worker(label, 0, conn, None, None)
        hello = self._line(w, ANSWER_TIMEOUT)
        if hello is None or hello.get("hello") != label:
            raise HarnessError(f"worker {label} did not say hello: {hello}")
        w.pid = int(hello["pid"])
        self.workers[label] = w
        return w

    def aim_pid(self, reuse: str | None) -> int | None:
        """Make the next pid of the namespace the dead worker's (ns_last_pid), if it is free."""
        if reuse is None:
            return None
        pid = self.workers[reuse].pid
        if not kernel.gone(pid):
            return None
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        return pid

    def spawn(self, label: str, reuse: str | None = None) -> Worker:
        aimed = self.aim_pid(reuse)
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(WORKER), label, self.sockpath])
        w = self._hello(label)
        w.proc = proc
        self._note_reuse(w, reuse, aimed)
        return w

    def _note_reuse(self, w: Worker, reuse: str | None, aimed: int | None) -> None:
        if reuse is None:
            return
        if aimed is not None and w.pid == aimed:
            w.reused = reuse
            self.count("pid reused")
        elif aimed is None:
            self.count("pid reuse: the pid was taken")
        else:
            self.count("pid reuse missed")

    def fork(self, parent: Worker, label: str, reuse: str | None = None) -> Worker | None:
        aimed = self.aim_pid(reuse)
        reply = self.call(parent, {"op": "fork", "label": label})
        if reply is None or not reply["ok"]:
            return None
        child = self._hello(label)
        child.parent = parent.label
        child.handles = dict(parent.handles)  # attachments, mappings and fds are inherited
        for how, o in parent.handles.values():
            if how == "shm":  # the kernel's shm_open() at fork records the parent as lpid
                parent.acted.add((o, "lpid"))
        self._note_reuse(child, reuse, aimed)
        return child

    def end(self, w: Worker, how: str) -> None:
        """exit (asked to) or kill (SIGKILL), then wait until its pid is free again."""
        if how == "exit":
            w.sock.sendall(b'{"op": "exit"}\n')
        else:
            os.kill(w.pid, signal.SIGKILL)
        self._reap(w)
        w.alive = False
        w.pending = None
        w.sock.close()

    def _reap(self, w: Worker) -> None:
        if w.proc is not None:
            w.proc.wait(ANSWER_TIMEOUT)
            return
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not kernel.gone(w.pid):
            if kernel.zombie(w.pid):  # an orphan, now ours (we are pid 1)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(w.pid, os.WNOHANG)
            if time.monotonic() > deadline:
                raise HarnessError(f"{w.label} (pid {w.pid}) does not go away")
            time.sleep(0.002)

    # talking ----------------------------------------------------------------------------
    def _line(self, w: Worker, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in w.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([w.sock], [], [], left)[0]:
                return None
            chunk = w.sock.recv(65536)
            if not chunk:
                return None
            w.buf += chunk
        line, w.buf = w.buf.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def _readable(self, w: Worker) -> bool:
        return b"\n" in w.buf or bool(select.select([w.sock], [], [], 0)[0])

    def call(
        self, w: Worker, cmd: dict[str, Any], obj: str = "", calls: frozenset[int] = frozenset()
    ) -> dict[str, Any] | None:
        """Send a command; its answer, or None when the worker now sleeps in one of `calls`."""
        w.sock.sendall((json.dumps(cmd) + "\n").encode())
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            if self._readable(w):
                return self._line(w, ANSWER_TIMEOUT)
            if calls and kernel.sleeping_in(w.pid, calls, w.tid):
                w.pending = Pending(cmd, self.step_no, obj, calls)
                return None
            time.sleep(0.001)
        raise HarnessError(f"{w.label} neither answered {cmd} nor slept in it")

    def settle(self, finish: Any) -> None:
        """Wait until every sleeping worker either answered (woken) or sleeps again."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        for w in self.live():
            while w.pending is not None:
                if self._readable(w):
                    reply = self._line(w, ANSWER_TIMEOUT)
                    pending, w.pending = w.pending, None
                    finish(w, pending.cmd, reply, pending.obj)
                elif kernel.sleeping_in(w.pid, w.pending.calls, w.tid):
                    break
                elif time.monotonic() > deadline:
                    raise HarnessError(f"{w.label} woke from {w.pending.cmd} but never answered")
                else:
                    time.sleep(0.001)

    # holding ----------------------------------------------------------------------------
    def read_recorded(self, o: Obj, shm: dict[int, kernel.Shm], msg: dict[int, kernel.Msg]) -> None:
        """Refresh o.recorded from the kernel (kept as last read once the object is gone)."""
        if o.kind == "shm" and o.id in shm:
            s = shm[o.id]
            o.recorded = {"cpid": s.cpid, "lpid": s.lpid}
        elif o.kind == "msg" and o.id in msg:
            m = msg[o.id]
            o.recorded = {"lspid": m.lspid, "lrpid": m.lrpid}
        elif o.kind == "sem" and o.id is not None:
            st = kernel.sem_state(o.id, o.nsems)
            if st is not None:
                o.recorded = {f"sem{i}": pid for i, pid in enumerate(st.pids)}

    def holders(self, o: Obj) -> list[str]:
        """How live processes hold o now, as the kernel could show it."""
        out = []
        for w in self.live():
            hows = sorted({how for how, lab in w.handles.values() if lab == o.label})
            out += [f"{how} by {w.label} (pid {w.pid})" for how in hows]
            if w.pending is not None and w.pending.obj == o.label:
                out.append(f"{w.label} (pid {w.pid}) blocked in {w.pending.cmd['op']}")
        for fld, pid in sorted(o.recorded.items()):
            recorder = self.by_pid(pid) if pid > 0 else None
            if recorder is not None and (o.label, fld) in recorder.acted:
                out.append(f"{fld} {pid} is live {recorder.label}, which recorded it")
        return out

    def snapshot(self) -> dict[str, list[str]]:
        """The holders of every object still there (and claimed or not)."""
        shm, msg = kernel.shm_table(), kernel.msg_table()
        out = {}
        for o in self.objs.values():
            if o.gone is None and (o.id is not None or o.ino is not None):
                self.read_recorded(o, shm, msg)
                out[o.label] = self.holders(o)
        return out

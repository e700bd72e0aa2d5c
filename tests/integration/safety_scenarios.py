"""Scenarios of test_safety.py, run INSIDE `unshare --ipc [--pid --fork --mount-proc]`.

Each reproduces a way the engine was once made to remove a live object: holders the kernel's
records do not show (queue waiters, pids hidden by a pid namespace), and hidepid's gid=.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration import scenarios, sysv
from tests.integration.scenarios import ipcs_keys, janitor, scenario, verdicts

ROOT = Path(__file__).resolve().parents[2]
SYSV_KEYS = "import os, sys; sys.path.insert(0, {root!r}); from tests.integration import sysv; "


def _thread_blocked_in(pid: int, nr: int) -> int | None:
    """The id of a thread of pid asleep in system call nr, if any."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        if sysv.blocked_in(pid, nr, int(tid)):
            return int(tid)
    return None


def _used_then_killed(key: int) -> None:
    """A queue sent to and read from by a process that is then SIGKILLed."""

    def body() -> None:
        q = sysv.msgget(key)
        sysv.msgsnd(q)
        sysv.msgrcv(q)

    sysv.kill9(sysv.spawn(body))


@scenario
def queue_waiters() -> dict[str, Any]:
    """Queues whose recorded pids are all dead while a live task waits on them."""
    # a live receiver blocked in msgrcv on an empty queue
    _used_then_killed(0x30000101)
    q1 = sysv.msgget(0x30000101)
    receiver = sysv.spawn(lambda: sysv.msgrcv(q1), block=True)
    sysv.wait_for(lambda: sysv.blocked_in(receiver, sysv.MSGRCV_NR))

    # a live producer blocked in msgsnd on a queue its dead predecessor filled
    def fill() -> None:
        sysv.msg_fill(sysv.msgget(0x30000102))

    sysv.kill9(sysv.spawn(fill))
    q2 = sysv.msgget(0x30000102)
    producer = sysv.spawn(lambda: sysv.msgsnd(q2, b"x" * 1024), block=True)
    sysv.wait_for(lambda: sysv.blocked_in(producer, sysv.MSGSND_NR))

    # a thread (not the main one) of a live process blocked in msgrcv
    _used_then_killed(0x30000103)
    q3 = sysv.msgget(0x30000103)

    def start_thread() -> None:
        threading.Thread(target=lambda: sysv.msgrcv(q3), daemon=True).start()

    holder = sysv.spawn(start_thread)
    sysv.wait_for(lambda: _thread_blocked_in(holder, sysv.MSGRCV_NR) is not None)
    thread = _thread_blocked_in(holder, sysv.MSGRCV_NR)

    _used_then_killed(0x30000104)  # control: every pid dead and nobody waiting
    run = janitor("clean", "--json")
    still = {
        "receiver": sysv.blocked_in(receiver, sysv.MSGRCV_NR),
        "producer": sysv.blocked_in(producer, sysv.MSGSND_NR),
        "thread": _thread_blocked_in(holder, sysv.MSGRCV_NR) == thread,
    }
    for pid in (receiver, producer, holder):
        sysv.kill9(pid)
    return {
        "clean": verdicts(run),
        "still_blocked": still,
        "left": ipcs_keys(),
        "pids": [receiver, producer, holder, thread],
    }


class InnerPidNamespace:
    """A child pid namespace sharing our IPC namespace: its processes see ours as pid 0."""

    def __init__(self) -> None:
        self.init = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sleep", "600"])
        children = Path(f"/proc/{self.init.pid}/task/{self.init.pid}/children")
        sysv.wait_for(lambda: children.read_text().strip() != "")
        self.pid1 = int(children.read_text().split()[0])

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-p", "-m", *cmd],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def python(self, code: str) -> None:
        """Run code in a process of the inner namespace, which then SIGKILLs itself."""
        self.run(sys.executable, "-c", SYSV_KEYS.format(root=str(ROOT)) + code
                 + "; os.kill(os.getpid(), 9)")  # fmt: skip

    def janitor(self, *args: str) -> dict[str, Any]:
        proc = self.run(sys.executable, "-m", "ipcjanitor", "--policy", scenarios.POLICY, *args)
        return {"rc": proc.returncode, "stderr": proc.stderr, "doc": proc.stdout}

    def close(self) -> None:
        self.init.kill()
        self.init.wait()


def _live(body: Callable[[], object]) -> int:
    return sysv.spawn(body)


@scenario
def hidden_holders() -> dict[str, Any]:
    """ipcjanitor in a child pid namespace; live holders outside it read as pid 0, while
    another recorded pid of the same object is visible and dead."""
    inner = InnerPidNamespace()
    try:
        # a set: sem 1 operated by a dead inner process, sem 0 by a live outsider
        inner.python("s = sysv.semget(0x10000201, 2); sysv.semop(s, 1, 1)")
        set_id = sysv.semget(0x10000201, 2)
        outsiders = [_live(lambda: sysv.semop(set_id, 0, 1))]
        # a queue: sent to by a dead inner process, read by a live outsider
        inner.python("sysv.msgsnd(sysv.msgget(0x30000201))")
        q = sysv.msgget(0x30000201)
        outsiders.append(_live(lambda: sysv.msgrcv(q)))
        # a segment made by a dead inner process, attached and detached by a live outsider
        inner.python("sysv.shmget(0x10000202)")
        seg = sysv.shmget(0x10000202)

        def attach_detach() -> None:
            sysv.libc.shmdt(sysv.libc.shmat(seg, None, 0))

        outsiders.append(_live(attach_detach))
        # control: a segment never attached, made by a dead inner process: its times prove
        # nobody used it, so its zero lpid means "none" even here
        inner.python("sysv.shmget(0x10000203)")
        scan = inner.janitor("scan", "--json")
        run = inner.janitor("clean", "--json")
        alive = [os.waitpid(p, os.WNOHANG) == (0, 0) for p in outsiders]
        for pid in outsiders:
            sysv.kill9(pid)
    finally:
        inner.close()
    return {
        "scan": verdicts({"doc": __import__("json").loads(scan["doc"])}),
        "clean": verdicts({"doc": __import__("json").loads(run["doc"])}),
        "rc": run["rc"],
        "stderr": run["stderr"],
        "outsiders_alive": alive,
        "left": ipcs_keys(),
    }


@scenario
def hidepid_gid() -> dict[str, Any]:
    """/proc with hidepid=invisible,gid=4444: a run in group 4444 sees every process, so a
    unit without processes is known to be stopped; a run outside the group knows it from the
    cgroup tree, which hidepid does not hide."""
    subprocess.run(["mount", "-o", "remount,hidepid=invisible,gid=4444", "/proc"], check=True)

    def dead() -> None:
        sysv.shmat(sysv.shmget(0x100000A4, mode=0o644))

    sysv.kill9(sysv.spawn(dead))
    member = janitor("scan", "--json", user="65534", groups="4444")
    outsider = janitor("scan", "--json", user="65534")
    return {"member": verdicts(member), "outsider": verdicts(outsider)}


if __name__ == "__main__":
    scenarios.main()

"""Scenarios of test_stuck_pipes.py, run INSIDE `unshare --ipc --mount --pid --fork --mount-proc`.

Real processes blocked writing to a full pipe or FIFO in each way doctor must see: a thread
that is not the leader, a FIFO the writer opened O_RDWR, splice/vmsplice/tee, an i386
program, and a pipe whose reader belongs to another user (doctor run as nobody). Every
process started here is killed by its pid before the scenario returns; the pid namespace
ends whatever is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration import scenarios
from tests.integration.scenarios import janitor, scenario

HERE = Path(__file__).parent
_WAITS = ("pipe_write", "pipe_wait_writable", "pipe_wait")  # 6.x says anon_pipe_write


def _writing(pid: int) -> list[int]:
    """The threads of pid asleep waiting for room in a pipe."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text()
        except OSError:
            continue
        if any(w in wchan for w in _WAITS) and "readable" not in wchan:
            found.append(int(tid))
    return found


def _until_blocked(procs: list[subprocess.Popen[bytes]]) -> dict[int, list[int]]:
    deadline = time.monotonic() + 10
    while True:
        seen = {p.pid: _writing(p.pid) for p in procs}
        if all(seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def _python(code: str, *, fds: tuple[int, ...] = (), user: str | None = None,
            stdout: int | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    cmd = [sys.executable, "-c", code]
    if user:  # exec after the uid change: the process stays dumpable, so /proc reads it
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.Popen(cmd, pass_fds=fds, stdout=stdout)


def _finish(procs: list[subprocess.Popen[bytes]], run: dict[str, Any]) -> dict[str, Any]:
    for p in procs:
        p.kill()
        p.wait()
    doc = run.get("doc", {})
    return {
        "rc": run["rc"],
        "stderr": run["stderr"][-2000:],
        "stuck": doc.get("stuck_pipes"),
        "notes": doc.get("notes"),
        "pids": [p.pid for p in procs],
    }


LOOP = "while True: os.write({fd}, b'x' * 4096)"


@scenario
def thread_writer() -> dict[str, Any]:
    """The leader sleeps; another thread blocks writing to the process's own pipe."""
    code = (
        "import os, threading, time\n"
        "r, w = os.pipe()\n"
        f"def loop():\n    {LOOP.format(fd='w')}\n"
        "threading.Thread(target=loop, daemon=True).start()\n"
        "time.sleep(600)\n"
    )
    procs = [_python(code)]
    blocked = _until_blocked(procs)
    result = _finish(procs, janitor("doctor", "--json"))
    return result | {"blocked": blocked}


@scenario
def fifo_writers() -> dict[str, Any]:
    """A writer stuck on a FIFO it opened O_RDWR (it holds the read end: the supervisord
    case on a named pipe), and a healthy one: O_WRONLY, with a reader that only sleeps."""
    d = Path(tempfile.mkdtemp(dir="/run"))
    own, shared = d / "own.fifo", d / "shared.fifo"
    os.mkfifo(own)
    os.mkfifo(shared)
    stuck = _python(f"import os\nfd = os.open({str(own)!r}, os.O_RDWR)\n" + LOOP.format(fd="fd"))
    reader = _python(
        f"import os, time\nfd = os.open({str(shared)!r}, os.O_RDONLY)\ntime.sleep(600)"
    )
    healthy = _python(
        f"import os\nfd = os.open({str(shared)!r}, os.O_WRONLY)\n" + LOOP.format(fd="fd")
    )
    blocked = _until_blocked([stuck, healthy])
    result = _finish([stuck, reader, healthy], janitor("doctor", "--json"))
    shutil.rmtree(d)
    return result | {"blocked": blocked, "own": str(own), "shared": str(shared)}


SPLICE = "import os\nr, w = os.pipe()\nz = os.open('/dev/zero', os.O_RDONLY)\nwhile True: os.splice(z, w, 65536)\n"
VMSPLICE = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "class Iov(ctypes.Structure):\n"
    "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
    "buf = ctypes.create_string_buffer(4096)\n"
    "iov = Iov(ctypes.cast(buf, ctypes.c_void_p), 4096)\n"
    "r, w = os.pipe()\n"
    "while True: libc.vmsplice(w, ctypes.byref(iov), 1, 0)\n"
)
TEE = (  # tee() copies the first pipe's data into the second without consuming it
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "r1, w1 = os.pipe()\n"
    "os.write(w1, b'y' * 4096)\n"
    "r2, w2 = os.pipe()\n"
    "while True: libc.tee(r1, w2, 65536, 0)\n"
)


@scenario
def splice_writers() -> dict[str, Any]:
    """splice() from /dev/zero, vmsplice() and tee(), each into its own full pipe."""
    procs = [_python(SPLICE), _python(VMSPLICE), _python(TEE)]
    blocked = _until_blocked(procs)
    result = _finish(procs, janitor("doctor", "--json"))
    return result | {"blocked": blocked}


@scenario
def unreadable_holder() -> dict[str, Any]:
    """doctor as nobody: its own writer's pipe is read by a process of another user (daemon),
    whose fds nobody may list. Root sees the reader; nobody must not say there is none."""
    r, w = os.pipe()
    holder = _python("import time\ntime.sleep(600)", fds=(r,), user="1")  # daemon
    writer = _python("import os\n" + LOOP.format(fd=w), fds=(w,), user="65534")  # nobody
    os.close(r)
    os.close(w)
    blocked = _until_blocked([writer])
    as_nobody = janitor("doctor", "--json", user="65534")
    as_root = janitor("doctor", "--json")
    result = _finish([holder, writer], as_nobody)
    root_doc = as_root.get("doc", {})
    return result | {
        "blocked": blocked,
        "holder": holder.pid,
        "writer": writer.pid,
        "root_rc": as_root["rc"],
        "root_stuck": root_doc.get("stuck_pipes"),
    }


@scenario
def i386_writer() -> dict[str, Any]:
    """A 32-bit program (i386 system call numbers) stuck on its own stdout pipe."""
    d = Path(tempfile.mkdtemp())
    exe = d / "writer32"
    subprocess.run(
        [
            "gcc",
            "-m32",
            "-nostdlib",
            "-static",
            "-O1",
            "-o",
            str(exe),
            str(HERE / "pipe_writer32.c"),
        ],
        check=True,
    )
    r, w = os.pipe()
    proc = subprocess.Popen([str(exe)], stdout=w, pass_fds=(r,))  # it holds the read end too
    os.close(r)
    os.close(w)
    blocked = _until_blocked([proc])
    syscall = Path(f"/proc/{proc.pid}/syscall").read_text().split()[:2]
    result = _finish([proc], janitor("doctor", "--json"))
    shutil.rmtree(d)
    return result | {"blocked": blocked, "syscall": syscall}


if __name__ == "__main__":
    scenarios.main()

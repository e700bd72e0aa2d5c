"""POSIX hold attacks, run INSIDE harness.in_namespace(posix=True) (fresh tmpfs on /dev/shm,
fresh mqueue on /dev/mqueue, private IPC, mount and pid namespaces): holders that /proc/PID/fd
and /proc/PID/maps do not show, and that a write lease may not see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.integration import posix_scenarios as ps

HERE = Path(__file__).parent

# a live process whose second thread has its own fd table (unshare(CLONE_FILES) in a thread:
# CLONE_THREAD does not need CLONE_FILES) and holds the object only there
THREAD_HOLDER = r"""
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mq_open.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
kind, name = sys.argv[1], sys.argv[2]
def hold():
    assert libc.unshare(0x400) == 0  # CLONE_FILES
    if kind == "mq":
        fd = libc.mq_open(b"/" + name.encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
    else:
        fd = os.open("/dev/shm/" + name, os.O_CREAT | os.O_RDWR, 0o600)
        os.write(fd, b"data")
    assert fd >= 0
    print("ready", threading.get_native_id(), flush=True)
    time.sleep(3600)
t = threading.Thread(target=hold, daemon=True)
t.start()
t.join()  # returns only if the holder thread failed: then exit, never hang the test
print("failed", flush=True)
"""
# an O_PATH fd of the object in flight in a unix socket (sent, not yet received): no fd in
# /proc/PID/fd stats to it, and an O_PATH file counts neither as a reader nor as a writer
OPATH_IN_FLIGHT = r"""
import os, socket, sys, time
name = sys.argv[2]
fd = os.open("/dev/shm/" + name, os.O_CREAT | os.O_RDWR, 0o600)
os.write(fd, b"data")
os.close(fd)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
p = os.open("/dev/shm/" + name, os.O_PATH)
socket.send_fds(a, [b"x"], [p])
os.close(p)
print("ready", flush=True)
sys.stdin.readline()  # then receive it and reopen the object through it
_, fds, _, _ = socket.recv_fds(b, 1, 1)
rw = os.open(f"/proc/self/fd/{fds[0]}", os.O_RDWR)
print("reopened", os.fstat(rw).st_nlink, os.pread(rw, 4, 0).decode(), flush=True)
"""


def _start(program: str, kind: str, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", program, kind, name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line
    return proc


@ps.scenario
def thread_fd_table() -> dict[str, Any]:
    """A queue and a file held only in a thread's own fd table."""
    held = [_start(THREAD_HOLDER, "mq", "q_thread"), _start(THREAD_HOLDER, "shm", "psm_thread")]
    scan = ps.by_name(ps.janitor("scan", "--json"))
    clean = ps.by_name(ps.janitor("clean", "--json"))
    left = ps.remaining()
    for p in held:
        p.kill()
        p.wait()
    return {"scan": scan, "clean": clean, "left": left}


@ps.scenario
def thread_cloned_without_files() -> dict[str, Any]:
    """A queue held only by a thread cloned without CLONE_FILES (thread_clone.c)."""
    build = Path(tempfile.mkdtemp())
    exe = build / "thread_clone"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(HERE / "thread_clone.c")], check=True)
    holder = subprocess.Popen([str(exe), "/q_clone"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    ready = holder.stdout.readline().strip()
    tasks = sorted(os.listdir(f"/proc/{holder.pid}/task"))
    scan = ps.by_name(ps.janitor("scan", "--json"))
    clean = ps.by_name(ps.janitor("clean", "--json"))
    left = ps.remaining()
    holder.kill()
    holder.wait()
    shutil.rmtree(build)
    return {"ready": ready, "tasks": len(tasks), "scan": scan, "clean": clean, "left": left}


@ps.scenario
def opath_in_flight() -> dict[str, Any]:
    holder = _start(OPATH_IN_FLIGHT, "shm", "psm_opath")
    scan = ps.by_name(ps.janitor("scan", "--json"))
    clean = ps.by_name(ps.janitor("clean", "--json"))
    left = ps.remaining()
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    after = holder.stdout.readline().strip()
    holder.wait()
    return {"scan": scan, "clean": clean, "left": left, "holder": after}


if __name__ == "__main__":
    ps.main()  # the scenarios above are registered in posix_scenarios' table

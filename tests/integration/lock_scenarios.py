"""Scenarios of test_run_lock.py, run INSIDE `unshare --ipc --pid --fork --mount-proc` with
its own /run (harness.py): another user tries to hold root's run lock.

flock needs no write access: whoever can open the lock file can hold LOCK_EX on it, and every
root run and hook then waits for it (issue 16.6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ipcjanitor.engine.lock import lock_path
from tests.integration import scenarios, sysv
from tests.integration.scenarios import ipcs_keys, scenario, verdicts

LOCK_DIR = Path("/run/ipcjanitor")
# what nobody runs: take LOCK_EX on every lock it can name or list there, then hold them
HOLDER = """
import fcntl, glob, json, os, sys, time
held, refused = [], []
for name in sorted(set(glob.glob("/run/ipcjanitor/*.lock")) | set(sys.argv[1:])):
    try:
        fd = os.open(name, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(name)
    except OSError as exc:
        refused.append(f"{name}: {exc.strerror}")
print(json.dumps({"held": held, "refused": refused}), flush=True)
time.sleep(600)
"""


def _ns() -> str:
    return os.readlink("/proc/self/ns/ipc").strip("ipc:[]")


def _known_names() -> list[str]:
    legacy = LOCK_DIR / f"ipcjanitor-ipc-{_ns()}.lock"  # the name before issue 16.6
    return sorted({str(lock_path()), str(legacy)})


def _hold_as_nobody() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    holder = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", HOLDER, *_known_names()],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    return holder, json.loads(holder.stdout.readline())


def _stale_segment(key: int) -> None:
    sysv.kill9(sysv.spawn(lambda: sysv.shmget(key)))


def _clean_within(seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "ipcjanitor", "--policy", str(scenarios.POLICY), "clean", "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds, check=False)
    except subprocess.TimeoutExpired:
        return {"finished": False}
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return {"finished": True, "rc": proc.returncode, "stderr": proc.stderr,
            "clean": verdicts({"doc": doc}) if doc else {}}  # fmt: skip


def _end(holder: subprocess.Popen[str]) -> None:
    holder.kill()  # ours, by its pid
    holder.wait()


@scenario
def nobody_takes_the_lock() -> dict[str, Any]:
    """A host where root's runs have made their lock; then nobody tries to hold it."""
    first = _clean_within(30)  # makes the lock directory and file, as any earlier run did
    holder, tried = _hold_as_nobody()
    try:
        _stale_segment(0x10000601)
        run = _clean_within(10)
    finally:
        _end(holder)
    st = LOCK_DIR.stat()
    return {"first": first, "tried": tried, "run": run, "left": ipcs_keys(),
            "dir": [st.st_uid, st.st_mode & 0o7777]}  # fmt: skip


@scenario
def nobody_holds_a_lock_from_before() -> dict[str, Any]:
    """The lock an older ipcjanitor left (0755 directory, 0644 file), held by nobody since."""
    LOCK_DIR.mkdir(mode=0o755)
    LOCK_DIR.chmod(0o755)
    legacy = LOCK_DIR / f"ipcjanitor-ipc-{_ns()}.lock"
    legacy.touch(mode=0o644)
    legacy.chmod(0o644)
    holder, tried = _hold_as_nobody()
    try:
        _stale_segment(0x10000602)
        run = _clean_within(10)
    finally:
        _end(holder)
    st = LOCK_DIR.stat()
    return {"tried": tried, "run": run, "left": ipcs_keys(),
            "dir": [st.st_uid, st.st_mode & 0o7777], "legacy": str(legacy)}  # fmt: skip


@scenario
def hook_behind_a_long_root_run() -> dict[str, Any]:
    """Another root run holds the lock for longer than a stop may take: the hook gives up."""
    from ipcjanitor.engine.lock import acquire

    _stale_segment(0x10000603)
    held = acquire()  # a root run that does not finish (only root can take it now)
    cmd = [sys.executable, "-m", "ipcjanitor", "--policy", str(scenarios.POLICY),
           "hook", "--unit", "svc.service"]  # fmt: skip
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        out: dict[str, Any] = {"finished": True, "rc": proc.returncode, "stderr": proc.stderr}
    except subprocess.TimeoutExpired:
        out = {"finished": False}
    finally:
        took = time.monotonic() - start
    try:  # --json: still one document, its notes saying why
        doc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=30,
                             check=False).stdout  # fmt: skip
    finally:
        held.release()
    return {**out, "took": took, "left": ipcs_keys(), "doc": json.loads(doc)}


if __name__ == "__main__":
    scenarios.main()

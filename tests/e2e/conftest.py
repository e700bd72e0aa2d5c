"""The `box` fixture: a contained real systemd with ipcjanitor, a test policy and leaky.service."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from .container import ROOT, Container

VENV_BIN = ROOT / ".venv" / "bin"
UNITS = ("ipcjanitor.service", "ipcjanitor.timer", "ipcjanitor-clock.service",
         "ipcjanitor-clock.timer", "ipcjanitor-hook.socket", "ipcjanitor-hook.service")  # fmt: skip
# the hook's two ways: started by its launcher in-process, or offered to the hook server
HOOK_PATHS = ("in-process", "served")
IN_PROCESS_NOTE = "own cgroup (the hook runs in it)"

LEAKY = """\
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
key = 0x61040000 | (os.getpid() & 0xFFFF)
shm = libc.shmget(key, 4096, 0o1600)
assert shm >= 0 and libc.shmat(shm, None, 0) not in (None, ctypes.c_void_p(-1).value)
sem = libc.semget(key, 2, 0o1600)
op = (ctypes.c_short * 3)(0, 1, 0)
assert sem >= 0 and libc.semop(sem, op, 1) == 0
print("ready", key, flush=True)
while True:
    time.sleep(60)
"""

# The container's pid namespace holds every process of its IPC namespace (both are private to
# it): the operator's statement that lets a zero pid or an empty unit count as proof here.
POLICY = """\
pid_namespace_complete = true

[owners.leaky]
unit = "leaky.service"
keys = ["0x61040000-0x6104ffff"]
min_age = "0s"

[owners.orphans]
keys = ["0x70000000-0x7000ffff"]
min_age = "0s"
"""


@pytest.fixture
def box() -> Iterator[Container]:
    c = Container()
    try:
        c.start()
        c.run(f"ln -s {VENV_BIN / 'ipcjanitor'} /usr/bin/ipcjanitor")
        c.write("/etc/ipcjanitor/policy.d/test.toml", POLICY)
        c.write("/usr/local/bin/leaky", LEAKY, 0o755)
        c.write(
            "/etc/systemd/system/leaky.service",
            "[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/leaky\n",
        )
        if shutil.which("scdoc"):  # so `Documentation=man:ipcjanitor(8)` resolves, as installed
            page = subprocess.run(["scdoc"], input=(ROOT / "docs" / "ipcjanitor.8.scd").read_text(),
                                  capture_output=True, text=True, check=True).stdout  # fmt: skip
            c.write("/usr/share/man/man8/ipcjanitor.8", page)
        for unit in UNITS:
            c.write(f"/etc/systemd/system/{unit}", (ROOT / "units" / unit).read_text())
        c.run("systemctl daemon-reload")
        # as the packages do: the clock recorder runs, and has read the clocks once
        c.run("systemctl enable --now ipcjanitor-clock.timer")
        c.wait_until("test -s /run/ipcjanitor/clock-steps")
        yield c
    finally:
        c.stop()


def hook_path(c: Container, path: str) -> Iterator[Container]:
    """The box with its hooks taken `path` (HOOK_PATHS); served: the hook server's socket
    enabled as the packages do, and at the end, proof that no hook ran in-process."""
    if path == "served":
        c.run("systemctl enable --now ipcjanitor-hook.socket")
    yield c
    if path == "served":
        said = c.run("journalctl --no-pager -o cat").stdout
        assert IN_PROCESS_NOTE not in said, "a hook ran in-process: the server did not serve it"
        server = c.run("journalctl --no-pager -o cat -u ipcjanitor-hook.service").stdout
        assert "Traceback" not in server, server


def journal(c: Container, *match: str) -> list[dict[str, object]]:
    """The records matching; --sync first: journald stores every record sent before it
    returns (a hook's records can still be queued when its unit reads failed, seen in CI)."""
    c.run("journalctl --sync")
    out = c.run(f"journalctl --no-pager -o json {' '.join(match)}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def sysvipc_keys(c: Container, table: str) -> list[int]:
    lines = c.run(f"cat /proc/sysvipc/{table}").stdout.splitlines()[1:]
    return [int(line.split()[0]) & 0xFFFFFFFF for line in lines]

"""Run a scenario inside fresh IPC and pid namespaces and bring its JSON result back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--ipc", "--pid", "--fork", "--mount-proc", "true"], check=False
    )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not can_unshare(), reason="needs root and unshare --ipc --pid"
)


_POSIX_MOUNTS = (
    "mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm && mount -t mqueue mqueue /dev/mqueue && "
)


def in_namespace(
    scenario: str,
    policy: str,
    tmp: Path,
    *extra: str,
    pid_ns: bool = True,
    module: str = "scenarios",
    posix: bool = False,
) -> Any:
    """Run MODULE.py SCENARIO in new namespaces; return the JSON it prints last.

    posix: also a fresh tmpfs on /dev/shm and a fresh mqueue (of the new IPC namespace) on
    /dev/mqueue, private to the new mount namespace: never the host's.
    """
    policy_file = tmp / "policy.toml"
    policy_file.write_text(policy)
    ns = ["--ipc", "--mount", *(["--pid", "--fork", "--mount-proc"] if pid_ns else [])]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if posix:  # so the scenario can refuse to run on the host's /dev/shm
        env["POSIX_TEST_HOST_SHM_DEV"] = str(os.stat("/dev/shm").st_dev)
    proc = subprocess.run(
        [
            "unshare",
            *ns,
            # its own /run (a private mount): root runs lock in /run/ipcjanitor as on a host,
            # clean and hook share that lock, and nothing lands in the host's /run
            "sh",
            "-c",
            "mount -t tmpfs -o mode=0755 tmpfs /run && "
            + (_POSIX_MOUNTS if posix else "")
            + 'exec "$@"',
            "sh",
            sys.executable,
            str(HERE / f"{module}.py"),
            scenario,
            str(policy_file),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"scenario {scenario} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])

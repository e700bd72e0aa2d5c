"""Run a peer's suite in fresh IPC, pid and mount namespaces (tests/peers/inside.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent

# One owner claiming every key and root's IPC_PRIVATE objects (the suites run as root), with
# nothing else keeping an object: no grace, queued messages no reason to keep a queue.
CLAIMS = """
keys = ["1-0xFFFFFFFF"]
uid = "root"
private = true
min_age = "0s"
keep_queued_messages = false
"""
UNIT = "peers-suite.service"
# The namespace's pid namespace holds every process of its IPC namespace: true, and said.
BOUND = f'pid_namespace_complete = true\n[owners.all]\nunit = "{UNIT}"{CLAIMS}'
UNITLESS = f"pid_namespace_complete = true\n[owners.all]{CLAIMS}"


def run(mode: str, kind: str, root: Path, tmp: Path, cgroup: Path | None = None) -> Any:
    """MODE (baseline, bound, unitless) of the suite at ROOT; the JSON inside.py printed."""
    policy = BOUND if mode == "bound" else UNITLESS
    config = {"mode": mode, "policy": policy, "suite": {"kind": kind, "root": str(root.resolve())}}
    if cgroup is not None:
        config["cgroup"] = str(cgroup)
    path = tmp / f"{kind}-{mode}.json"
    path.write_text(json.dumps(config))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PEERS_HOST_IPC_NS=os.readlink("/proc/self/ns/ipc"))
    cmd = [
        *("unshare", "--ipc", "--pid", "--fork", "--mount-proc"),
        # the namespace's own /run: the policy file, the run lock, the suite's result
        *("sh", "-c", 'mount -t tmpfs -o mode=0755 tmpfs /run && exec "$@"', "sh"),
        *(sys.executable, "-m", "tests.peers.inside", str(path)),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(f"inside.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    (tmp / f"{kind}-{mode}.result.json").write_text(json.dumps(doc, indent=1))
    return doc

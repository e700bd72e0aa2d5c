"""Inside fresh IPC, pid and mount namespaces: a peer's suite beside `clean` in a loop.

`python -m tests.peers.inside CONFIG.json` (started by tests/peers/harness.py through unshare;
it refuses to run in the host's IPC namespace). CONFIG: mode (baseline: no janitor), suite
(kind unittest or prove, root), policy (its text, written to this mount namespace's own /run),
cgroup (bound mode: the stand-in unit's directory the suite runs in). Prints one JSON document.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POLICY = Path("/run/peers/policy.toml")
_SUMMARY = re.compile(r"^(t/\S+\.t)\s+\(Wstat: (\d+).*?Tests: (\d+) Failed: (\d+)\)")
_FAILED = re.compile(r"^\s+Failed tests?:\s+(.+)$")


def janitor(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ipcjanitor", "--policy", str(POLICY), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


class Loop(threading.Thread):
    """`clean --json` again and again until stopped; every removal, when and why."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.runs = 0
        self.failed_runs: list[str] = []
        self.removed: list[dict[str, Any]] = []

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            proc = janitor("clean", "--json")
            self.runs += 1
            if proc.returncode != 0:
                self.failed_runs.append(f"exit {proc.returncode}: {proc.stderr[-400:]}")
            if not proc.stdout.startswith("{"):
                continue
            for o in json.loads(proc.stdout)["objects"]:  # a failed run may have removed some
                if o["verdict"] == "removed":
                    at = round(time.monotonic() - start, 2)
                    self.removed.append({k: o[k] for k in ("kind", "key", "id", "owner", "reason")})
                    self.removed[-1]["at"] = at


def prove_broken(output: str) -> list[str]:
    """What prove's summary says broke: FILE#N per failed test, FILE:exit for a bad exit."""
    broken: list[str] = []
    current = None
    for line in output.splitlines():
        if m := _SUMMARY.match(line):
            current = m.group(1)
            if m.group(2) != "0":
                broken.append(f"{current}:exit")
        elif current and (m := _FAILED.match(line)):
            for part in m.group(1).split(","):
                low, _, high = part.strip().partition("-")
                for n in range(int(low), int(high or low) + 1):
                    broken.append(f"{current}#{n}")
    return sorted(set(broken))


def run_suite(suite: dict[str, Any], cgroup: str | None) -> dict[str, Any]:
    """The suite, in the stand-in unit's cgroup when there is one; what broke and how long."""
    root = Path(suite["root"])

    def join_unit() -> None:
        if cgroup:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))

    out = Path("/run/peers/result.json")
    if suite["kind"] == "unittest":
        cmd = [sys.executable, str(HERE / "pyunit.py"), str(root), str(out)]
    else:
        cmd = ["prove", "-l", "t/"]
    env = dict(os.environ, CI_TESTING="1")  # as Debian's autopkgtest runs IPC::Shareable's
    env.pop("PYTHONPATH", None)  # our tests/ package is not sysv_ipc's
    began = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=root, env=env, capture_output=True, text=True, preexec_fn=join_unit, check=False
    )
    seconds = round(time.monotonic() - began, 1)
    if suite["kind"] == "unittest":
        doc = json.loads(out.read_text()) if out.exists() else {"broken": ["(no result)"]}
    else:
        ran = re.search(r"^Files=\d+, Tests=(\d+),", proc.stdout, re.M)
        doc = {"broken": prove_broken(proc.stdout), "tail": proc.stdout[-1500:]}
        doc["ran"] = int(ran.group(1)) if ran else 0
    return {**doc, "seconds": seconds, "rc": proc.returncode, "stderr": proc.stderr[-1500:]}


def leftovers() -> dict[str, Any]:
    """One clean after the suite, then a scan: what is left, each with its verdict and reason."""
    final = janitor("clean", "--json")
    scan = janitor("scan", "--json")
    kept = [
        {k: o[k] for k in ("kind", "key", "id", "owner", "verdict", "reason")}
        for o in json.loads(scan.stdout)["objects"]
    ]
    removed = [o["key"] for o in json.loads(final.stdout)["objects"] if o["verdict"] == "removed"]
    return {"final_removed": removed, "kept": kept, "final_rc": final.returncode}


def main() -> None:
    if os.readlink("/proc/self/ns/ipc") == os.environ.get("PEERS_HOST_IPC_NS"):
        sys.exit("inside.py runs only in its own IPC namespace (see harness.py)")
    config = json.loads(Path(sys.argv[1]).read_text())
    POLICY.parent.mkdir(mode=0o755, exist_ok=True)
    POLICY.write_text(config["policy"])
    check = janitor("policy", "check")
    loop = Loop()
    if config["mode"] != "baseline":
        loop.start()
    suite = run_suite(config["suite"], config.get("cgroup"))
    loop.stop.set()
    if loop.is_alive():
        loop.join()
    doc = {
        "suite": suite,
        "policy_check": check.stdout + check.stderr,
        "runs": loop.runs,
        "failed_runs": loop.failed_runs,
        "removed": loop.removed,
        **(leftovers() if config["mode"] != "baseline" else {}),
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    main()

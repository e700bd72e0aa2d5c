"""A /dev/shm subdirectory another user owns (mode 0700), its files claimed by a policy; run
INSIDE harness.in_namespace(posix=True) (fresh /dev/shm and /dev/mqueue in private IPC, mount
and pid namespaces). The janitor runs as full root, with only the capabilities the shipped
unit's CapabilityBoundingSet= gives it (setpriv --bounding-set: what root keeps across
execve is exactly that set, as under systemd), and as another user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.integration import posix_scenarios as ps

OWNER = 4401  # the directory's (and its files') owner
STRANGER = 4402  # a user who may not enter it


def _make() -> None:
    """/dev/shm/app: uid 4401's, 0700, holding two of its files nobody uses; /dev/shm/pub:
    uid 4401's too, sticky and world-writable (1777), holding one."""
    for top, mode, names in (("app", 0o700, ("psm_a", "psm_b")), ("pub", 0o1777, ("psm_c",))):
        where = Path("/dev/shm") / top
        where.mkdir()
        for name in names:
            (where / name).write_bytes(b"data")
            os.chown(where / name, OWNER, OWNER)
            (where / name).chmod(0o600)
        os.chown(where, OWNER, OWNER)
        where.chmod(mode)


def _janitor(caps: str | None, *args: str) -> dict[str, Any]:
    """ipcjanitor ARGS --json as root with only CAPS (a setpriv --bounding-set list)."""
    prefix = [] if caps is None else ["setpriv", "--inh-caps=-all", f"--bounding-set={caps}"]
    cmd = [*prefix, sys.executable, "-m", "ipcjanitor", "--policy", ps.POLICY, *args, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    doc = json.loads(proc.stdout) if proc.stdout.startswith("{") else None
    return {"rc": proc.returncode, "stderr": proc.stderr, "doc": doc}


def _verdicts(run: dict[str, Any]) -> dict[str, list[str]]:
    if run["doc"] is None:
        raise SystemExit(f"no JSON from the janitor: {run}")
    return {o["name"]: [o["verdict"], o["reason"]] for o in run["doc"]["objects"] if "name" in o}


def _run(caps: str | None) -> dict[str, Any]:
    _make()
    scan, clean = _janitor(caps, "scan"), _janitor(caps, "clean")
    left = sorted(os.listdir("/dev/shm/app")) + sorted(os.listdir("/dev/shm/pub"))
    return {
        "scan": _verdicts(scan),
        "clean": _verdicts(clean),
        "rc": [scan["rc"], clean["rc"]],
        "notes": clean["doc"]["summary"].get("notes", []),
        "left": left,
        "top": sorted(os.listdir("/dev/shm")),
        "caps": caps,
    }


@ps.scenario
def foreign_dir_shipped_caps() -> dict[str, Any]:
    return _run(sys.argv[3])


@ps.scenario
def foreign_dir_full_root() -> dict[str, Any]:
    return _run(None)


@ps.scenario
def foreign_dir_stranger() -> dict[str, Any]:
    """As another user: the directory cannot be listed."""
    _make()
    Path("/dev/shm/psm_top").write_bytes(b"")  # something it can see, so the run has work
    os.chown("/dev/shm/psm_top", STRANGER, STRANGER)
    scan = ps.janitor("scan", "--json", user=str(STRANGER))
    clean = ps.janitor("clean", "--json", user=str(STRANGER))
    return {
        "scan": ps.by_name(scan),
        "rc": [scan["rc"], clean["rc"]],
        "notes": clean["doc"]["summary"].get("notes", []),
        "left": sorted(os.listdir("/dev/shm/app")) + sorted(os.listdir("/dev/shm/pub")),
        "stderr": clean["stderr"],
        "tmp": tempfile.gettempdir(),
    }


def main() -> None:
    ps.POLICY = sys.argv[2]
    ps.private_mounts()
    print(json.dumps(ps.SCENARIOS[sys.argv[1]]()))


if __name__ == "__main__":
    main()

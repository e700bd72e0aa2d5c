"""`doctor` and `scan -v`: the one line saying that objects are `unknown` only because
ipcjanitor runs outside the host's pid namespace (a container), by which manager, and what
`pid_namespace_complete = true` would assert (issue 20).

`pid_namespace_line` is pure; `container_manager` is the I/O (systemd's record of the
container it was started in, else `systemd-detect-virt --container`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from ..model import Verdict

# the texts a pid-namespace doubt leaves in a reason (kernel.processes.visibility, decide)
_MARKS = ("outside the host's pid namespace", "hidden from our pid namespace")
CONTAINER_RECORD = Path("/run/systemd/container")


def pid_namespace_line(
    verdicts: Iterable[tuple[Verdict, str]], outside: bool, manager: str | None
) -> str | None:
    """PURE: the line, or None. `verdicts`: (verdict, reason) of every object looked at;
    `outside`: ipcjanitor is outside the host's pid namespace and the policy does not set
    pid_namespace_complete. Said only when every unknown object is unknown for that alone."""
    unknown = [reason for verdict, reason in verdicts if verdict is Verdict.UNKNOWN]
    if not outside or not unknown or not all(any(m in r for m in _MARKS) for r in unknown):
        return None
    where = f"in a container ({manager})" if manager else "in another pid namespace"
    return (
        f"{len(unknown)} object(s) are unknown only because ipcjanitor runs {where}, outside "
        "the host's pid namespace: a process of another pid namespace reads as pid 0, which "
        "may be a live process. `pid_namespace_complete = true` in the policy asserts that "
        "this pid namespace holds every process of its IPC namespace (no process outside it "
        "can use these objects); then a zero pid is no process and they are judged"
    )


def container_manager(detect: str = "systemd-detect-virt") -> str | None:
    """The container manager systemd recorded (/run/systemd/container), else what
    systemd-detect-virt --container says; None when neither tells."""
    try:
        name = CONTAINER_RECORD.read_text().strip()
    except OSError:
        name = ""
    if name:
        return name[:64]
    try:
        out = subprocess.run(
            [detect, "--container"], capture_output=True, text=True, timeout=2, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[:64] if out and out != "none" else None

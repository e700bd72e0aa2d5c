"""What the hook costs a crashing service: restart latency under a real systemd.

Boots the contained systemd of the e2e tests (tests/e2e/container.py: private namespaces, the
host untouched), runs a service with Restart=always, RestartSec=0, StartLimitIntervalSec=0
that holds a SysV segment and semaphore set of a policy owner bound to it, SIGKILLs it
KILLS times, and measures from the SIGKILL to the next main process's start as systemd
records it (ExecMainStartTimestampMonotonic; the same CLOCK_MONOTONIC) — once without the
ExecStopPost= drop-in, once with it.
Prints the medians and their difference: the downtime the hook adds to every kill.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.container import Container  # noqa: E402

KILLS = int(os.environ.get("BENCH_KILLS", "20"))
WORKER = """\
import ctypes, os, time
libc = ctypes.CDLL(None)
key = 0x61040000 | (os.getpid() & 0xFFFF)
assert libc.shmget(key, 4096, 0o1600) >= 0 and libc.semget(key, 1, 0o1600) >= 0
open("/run/worker.ready", "w").write(str(os.getpid()))
time.sleep(3600)
"""
UNIT = """\
[Unit]
StartLimitIntervalSec=0
[Service]
ExecStart=/usr/bin/python3 /usr/local/bin/worker
Restart=always
RestartSec=0
"""
POLICY = """\
pid_namespace_complete = true
[owners.worker]
unit = "worker.service"
keys = ["0x61040000-0x6104ffff"]
min_age = "0s"
"""


def prop(c: Container, name: str) -> int:
    """A numeric property of worker.service."""
    return int(c.run(f"systemctl show -p {name} --value worker.service").stdout.strip() or 0)


def restarts(c: Container) -> list[float]:
    """Kill the worker KILLS times; the exit-to-next-start gap of each, in ms."""
    gaps = []
    for _ in range(KILLS):
        c.wait_until("test -s /run/worker.ready")
        pid = int(c.run("cat /run/worker.ready").stdout)
        c.run("rm -f /run/worker.ready")
        killed = c.run(
            "python3 -c 'import os, time; t = time.monotonic(); "
            f"os.kill({pid}, 9); print(int(t * 1e6))'"
        )
        c.wait_until(f"test -s /run/worker.ready && test $(cat /run/worker.ready) != {pid}")
        started = prop(c, "ExecMainStartTimestampMonotonic")  # the same CLOCK_MONOTONIC
        gaps.append((started - int(killed.stdout)) / 1000)
    return gaps


def main() -> None:
    c = Container()
    c.start()
    try:
        c.run(f"ln -sf {ROOT / '.venv' / 'bin' / 'ipcjanitor'} /usr/bin/ipcjanitor")
        c.write("/usr/local/bin/worker", WORKER, 0o755)
        c.write("/etc/systemd/system/worker.service", UNIT)
        c.write("/etc/ipcjanitor/policy.d/worker.toml", POLICY)
        c.run("systemctl daemon-reload && systemctl start worker.service")
        without = restarts(c)
        c.run("ipcjanitor install-hook worker.service")
        c.run("systemctl daemon-reload")
        time.sleep(0.5)
        with_hook = restarts(c)
        left = c.run("cat /proc/sysvipc/shm | wc -l").stdout.strip()
    finally:
        c.stop()
    a, b = statistics.median(without), statistics.median(with_hook)
    print(f"restart latency, median of {KILLS} SIGKILLs (SIGKILL sent to the start of the")
    print("next main process, systemd's ExecMainStartTimestampMonotonic, one CLOCK_MONOTONIC):")
    print(f"  without the hook {a:7.1f} ms   (min {min(without):.1f}, max {max(without):.1f})")
    print(f"  with the hook    {b:7.1f} ms   (min {min(with_hook):.1f}, max {max(with_hook):.1f})")
    print(f"  added by the hook: {b - a:.1f} ms   (segments left at the end: {int(left) - 1})")


if __name__ == "__main__":
    main()

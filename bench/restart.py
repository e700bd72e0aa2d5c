"""What the hook costs a crashing service: restart latency under a real systemd.

Boots the contained systemd of the e2e tests (tests/e2e/container.py: private namespaces, the
host untouched), runs a service with Restart=always, RestartSec=0, StartLimitIntervalSec=0
that holds a SysV segment and semaphore set of a policy owner bound to it, SIGKILLs it
KILLS times, and measures from the SIGKILL to the next main process's start as systemd
records it (ExecMainStartTimestampMonotonic; the same CLOCK_MONOTONIC) — without an
ExecStopPost=, with `python -c pass` as ExecStopPost= through the same trampoline (what any
Python hook costs before doing anything), and with the drop-in `install-hook` writes.
Prints the medians and their differences: the downtime the hook adds to every kill. It also
checks that the hook did its job each time: every segment of a killed worker removed, one
removal record each. The policy does not set pid_namespace_complete: the hook decides from the
unit's own cgroup (issue 20).
Run by `make bench` (~20 s); needs root (the contained systemd).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.container import Container, available  # noqa: E402

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
    if (why := available()) is not None:
        sys.exit(f"bench/restart.py: cannot boot the contained systemd: {why}")
    c = Container()
    c.start()
    try:
        c.run(f"ln -sf {ROOT / '.venv' / 'bin' / 'ipcjanitor'} /usr/bin/ipcjanitor")
        c.write("/usr/local/bin/worker", WORKER, 0o755)
        c.write("/etc/systemd/system/worker.service", UNIT)
        c.write("/etc/ipcjanitor/policy.d/worker.toml", POLICY)
        c.run("systemctl daemon-reload && systemctl start worker.service")
        without = restarts(c)
        trampoline = ROOT / "ipcjanitor" / "ipcjanitor-hook"
        floor = f"ExecStopPost=-+{trampoline} {ROOT / '.venv' / 'bin' / 'python'} -c pass\n"
        c.write("/etc/systemd/system/worker.service.d/floor.conf", f"[Service]\n{floor}")
        c.run("systemctl daemon-reload")
        with_pass = restarts(c)
        c.run("rm /etc/systemd/system/worker.service.d/floor.conf")
        c.run("ipcjanitor install-hook worker.service")  # it reloads systemd
        time.sleep(0.5)
        since = c.run("date +@%s.%N").stdout.strip()
        with_hook = restarts(c)
        left = c.run("cat /proc/sysvipc/shm | wc -l").stdout.strip()
        records = c.run(
            f"journalctl --since={since} IPCJANITOR_UNIT=worker.service IPCJANITOR_KIND=shm "
            "IPCJANITOR_VERDICT=removed -o json"
        ).stdout
    finally:
        c.stop()
    a, p, b = (statistics.median(x) for x in (without, with_pass, with_hook))
    answered = len({json.loads(r)["IPCJANITOR_KEY"] for r in records.splitlines() if r.strip()})
    print(f"restart latency, median of {KILLS} SIGKILLs (SIGKILL sent to the start of the")
    print("next main process, systemd's ExecMainStartTimestampMonotonic, one CLOCK_MONOTONIC):")
    for name, gaps, m in (
        ("without an ExecStopPost=", without, a),
        ("python -c pass as ExecStopPost=", with_pass, p),
        ("with the hook", with_hook, b),
    ):
        print(f"  {name:32s} {m:6.1f} ms  (min {min(gaps):.1f}, max {max(gaps):.1f})")
    print(f"  added by the hook: {b - a:.1f} ms; by `python -c pass`: {p - a:.1f} ms")
    print(
        f"  the hook's work: segments leaked {int(left) - 2} (besides the live worker's); "
        f"segments removed by the hook {answered} of {KILLS}"
    )


if __name__ == "__main__":
    main()

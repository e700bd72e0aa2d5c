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
Then the same with BENCH_CROWD (20,000; 0: skip) more live processes in the container (a
crowd.service of sleeping forks): the hook reads only its own cgroup, never the process table.
Wall time is noisy on a loaded machine, so it also reports the CPU the hook itself spends
(`ipcjanitor -q hook` run BENCH_CPU_RUNS times from inside a unit it is bound to, as
ExecStopPost= would; RUSAGE_CHILDREN, median) beside its wall time, with and without the crowd.
Then the same hooks offered to the hook server (units/ipcjanitor-hook.socket, as the packages
enable it; hook/serve.py), with and without the crowd.
Run by `make bench` (~1 min); needs root (the contained systemd).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.container import Container, available  # noqa: E402

KILLS = int(os.environ.get("BENCH_KILLS", "20"))
CROWD = int(os.environ.get("BENCH_CROWD", "20000"))
CPU_RUNS = int(os.environ.get("BENCH_CPU_RUNS", "30"))
CROWD_CODE = f"""\
import os, signal
for _ in range({CROWD}):
    if os.fork() == 0:
        signal.pause()
open("/run/crowd.ready", "w").write("1")
signal.pause()
"""
# run inside hookprobe.service (its cgroup holds this probe and each hook it runs, as the
# unit's cgroup holds the hook while ExecStopPost= runs): CPU and wall time, median, in ms
PROBE_CODE = f"""\
import resource, statistics, subprocess, sys, time
# argv: the trampoline and /usr/bin/ipcjanitor (the drop-in's launcher: via the hook server)
launcher = sys.argv[1:] or ["ipcjanitor"]
for name, cmd in (("hook", [*launcher, "-q", "hook", "--unit", "hookprobe.service"]),
                  ("pass", [sys.executable, "-c", "pass"])):
    cpu, wall = [], []
    for _ in range({CPU_RUNS}):
        r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall.append(time.monotonic() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    print(name, statistics.median(cpu) * 1e3, statistics.median(wall) * 1e3)
"""
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

[owners.probe]
unit = "hookprobe.service"
keys = ["0x61050000"]
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


def hook_cpu(c: Container, launcher: str = "") -> dict[str, tuple[float, float]]:
    """{"hook"|"pass": (CPU ms, wall ms)}, medians of CPU_RUNS runs inside hookprobe.service
    (launcher: how to start the hook, e.g. through the trampoline; the CPU is then its own,
    the hook server's is not a child of the probe)."""
    c.write("/usr/local/bin/hookprobe", PROBE_CODE)
    out = c.run(
        "systemd-run --quiet --wait --pipe --unit=hookprobe -p TasksMax=infinity "
        f"/usr/bin/python3 /usr/local/bin/hookprobe {launcher}",
        timeout=600,
    ).stdout
    return {f[0]: (float(f[1]), float(f[2])) for f in (ln.split() for ln in out.splitlines())}


def serve_hooks(c: Container) -> None:
    """The hook server's socket and service, as the packages ship them, started."""
    for name in ("ipcjanitor-hook.socket", "ipcjanitor-hook.service"):
        c.write(f"/etc/systemd/system/{name}", (ROOT / "units" / name).read_text())
    c.run("systemctl daemon-reload && systemctl start ipcjanitor-hook.socket")
    c.run("ipcjanitor -q hook --unit=nothing.service")  # starts the server: warm from here


def start_crowd(c: Container) -> None:
    c.write("/usr/local/bin/crowd", CROWD_CODE)
    c.run("systemd-run --quiet --unit=crowd -p TasksMax=infinity /usr/bin/python3 "
          "/usr/local/bin/crowd")  # fmt: skip
    c.wait_until("test -s /run/crowd.ready", timeout=600)


def measure(c: Container) -> dict[str, object]:
    """Every row: restart gaps without/with the hook, its CPU; again with the crowd."""
    c.run("systemctl daemon-reload && systemctl start worker.service")
    got: dict[str, object] = {"without": restarts(c)}
    trampoline = ROOT / "ipcjanitor" / "ipcjanitor-hook"
    floor = f"ExecStopPost=-+{trampoline} {ROOT / '.venv' / 'bin' / 'python'} -c pass\n"
    c.write("/etc/systemd/system/worker.service.d/floor.conf", f"[Service]\n{floor}")
    c.run("systemctl daemon-reload")
    got["pass"] = restarts(c)
    c.run("rm /etc/systemd/system/worker.service.d/floor.conf")
    c.run("ipcjanitor install-hook worker.service")  # it reloads systemd
    time.sleep(0.5)
    since = c.run("date +@%s.%N").stdout.strip()
    got["hook"] = restarts(c)
    got["left"] = int(c.run("cat /proc/sysvipc/shm | wc -l").stdout.strip())
    got["records"] = c.run(
        f"journalctl --since={since} IPCJANITOR_UNIT=worker.service IPCJANITOR_KIND=shm "
        "IPCJANITOR_VERDICT=removed -o json"
    ).stdout
    got["cpu"] = hook_cpu(c)
    serve_hooks(c)  # the same hooks, now offered to the hook server first
    since = c.run("date +@%s.%N").stdout.strip()
    got["server"] = restarts(c)
    got["server_left"] = int(c.run("cat /proc/sysvipc/shm | wc -l").stdout.strip())
    got["server_records"] = c.run(
        f"journalctl --since={since} IPCJANITOR_UNIT=worker.service IPCJANITOR_KIND=shm "
        "IPCJANITOR_VERDICT=removed _SYSTEMD_UNIT=ipcjanitor-hook.service -o json"
    ).stdout
    got["server_cpu"] = hook_cpu(
        c, f"{ROOT / 'ipcjanitor' / 'ipcjanitor-hook'} /usr/bin/ipcjanitor"
    )
    if CROWD:
        start_crowd(c)
        got["crowd_server"] = restarts(c)
        c.run("systemctl stop ipcjanitor-hook.socket ipcjanitor-hook.service")  # in-process
        got["crowd_hook"] = restarts(c)
        got["crowd_cpu"] = hook_cpu(c)
        c.run("rm /etc/systemd/system/worker.service.d/ipcjanitor.conf")
        c.run("systemctl daemon-reload")
        time.sleep(0.5)
        got["crowd_without"] = restarts(c)
        c.run("systemctl stop crowd.service", timeout=600)
    return got


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
        got = measure(c)
    finally:
        c.stop()
    report(got)


def report(got: dict[str, Any]) -> None:
    without, with_pass, with_hook = got["without"], got["pass"], got["hook"]
    a, p, b = (statistics.median(x) for x in (without, with_pass, with_hook))
    answered = len({json.loads(r)["IPCJANITOR_KEY"] for r in got["records"].splitlines() if r})
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
        f"  the hook's work: segments leaked {got['left'] - 2} (besides the live worker's); "
        f"segments removed by the hook {answered} of {KILLS}"
    )
    cpu_line("", got["cpu"])
    if "server" in got:
        s = statistics.median(got["server"])
        served = {json.loads(r)["IPCJANITOR_KEY"] for r in got["server_records"].splitlines() if r}
        print(f"with the hook server (ipcjanitor-hook.socket): {s:6.1f} ms "
              f"(min {min(got['server']):.1f}, max {max(got['server']):.1f}): "
              f"added {s - a:.1f} ms")  # fmt: skip
        print(f"  segments leaked {got['server_left'] - 2}; removed by the server "
              f"{len(served)} of {KILLS}")  # fmt: skip
        cpu_line("  ", got["server_cpu"])
    if CROWD:
        ca, cb = statistics.median(got["crowd_without"]), statistics.median(got["crowd_hook"])
        print(f"with {CROWD} more live processes in the container:")
        print(f"  without an ExecStopPost= {ca:6.1f} ms, with the hook {cb:6.1f} ms: "
              f"added by the hook {cb - ca:.1f} ms")  # fmt: skip
        cs = statistics.median(got["crowd_server"])
        print(f"  with the hook server {cs:6.1f} ms: added {cs - ca:.1f} ms")
        cpu_line("  ", got["crowd_cpu"])


def cpu_line(indent: str, cpu: dict[str, tuple[float, float]]) -> None:
    (hc, hw), (pc, pw) = cpu["hook"], cpu["pass"]
    print(f"{indent}the hook's own cost, median of {CPU_RUNS} (RUSAGE_CHILDREN): CPU {hc:.1f} ms, "
          f"wall {hw:.1f} ms; `python -c pass` CPU {pc:.1f} ms, wall {pw:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()

"""Scenarios of test_learn_claims.py, run INSIDE `unshare --ipc --pid --fork --mount-proc`.

Two services stood in by processes in cgroups named like units. other.service, all root: a
setup process that creates a world-readable segment and two more beside the learned unit's
keys, then exits; a daemon that stays alive and creates one more, also world-readable; a
client that attaches the setup's segments during the watch and exits after it. learned.service:
a root master with segments of its own, and a worker that drops to nobody and attaches
other.service's two world-readable segments (Apache, php-fpm and nginx run workers so).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any

from tests.integration import scenarios, sysv
from tests.integration.scenarios import ipcs_keys, janitor, scenario, verdicts

THEIRS = 0x62000010  # other.service's, mode 0644: anyone may attach it read-only
THEIRS_TOO = 0x62000011  # the same, made by other.service's daemon (alive: its pid recorded)
OURS = (0x62000001, 0x62000003, 0x62000005)  # the master's: a dense run ...
BETWEEN = (0x62000002, 0x62000004)  # ... around two keys of other.service, the same uid
SHM_RDONLY = 0o10000
NOBODY = 65534


def _join(cgroup: Path) -> None:
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))


def _name(comm: bytes) -> None:
    sysv.libc.prctl(15, comm, 0, 0, 0)  # PR_SET_NAME: what learn names a process by


def _other_setup(cgroup: Path) -> None:
    _join(cgroup)
    sysv.shmget(THEIRS, mode=0o644)
    for key in BETWEEN:
        sysv.shmget(key)


def _other_daemon(cgroup: Path) -> None:
    _join(cgroup)
    _name(b"otherd")
    sysv.shmget(THEIRS_TOO, mode=0o644)


def _other_client(cgroup: Path) -> None:
    _join(cgroup)
    _name(b"otherc")
    for key in (THEIRS, *BETWEEN):
        sysv.shmat(sysv.shmget(key))


def _master(cgroup: Path) -> None:
    _join(cgroup)
    for key in OURS:
        sysv.shmat(sysv.shmget(key))


def _worker(cgroup: Path) -> None:
    _join(cgroup)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    for key in (THEIRS, THEIRS_TOO):
        shmid = sysv.libc.shmget(ctypes.c_int32(key), 0, 0)
        addr = sysv.libc.shmat(shmid, None, SHM_RDONLY)
        if shmid < 0 or addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "attaching other.service's segment")


def _shmids() -> dict[str, int]:
    rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {f"0x{int(r.split()[0]) & 0xFFFFFFFF:08x}": int(r.split()[1]) for r in rows}


@scenario
def learn_beside_another_root_service() -> dict[str, Any]:
    """learn --write the unit; stop it, and other.service's client; run the unit's hook."""
    base = Path(os.environ["IJ_CGROUP"])
    learned, other = base / "learned.service", base / "other.service"
    policy = Path(scenarios.POLICY).parent / "policy.d"
    policy.mkdir()
    (policy / "base.toml").write_text("pid_namespace_complete = true\n")
    started: list[int] = []
    learned.mkdir()
    other.mkdir()
    try:
        sysv.run_and_exit(functools.partial(_other_setup, other))
        started += [sysv.spawn(functools.partial(body, other))
                    for body in (_other_daemon, _other_client)]  # fmt: skip
        unit = [sysv.spawn(functools.partial(body, learned)) for body in (_master, _worker)]
        started += unit
        shmids, client = _shmids(), started[1]
        run = janitor("learn", "learned.service", "--for", "1s", "--write", policy=str(policy))
        written = policy / "learned.toml"
        for pid in [*unit, started[1]]:  # other.service's daemon keeps running
            sysv.kill9(pid)
            started.remove(pid)
        hook = janitor("hook", "--unit", "learned.service", "--json", policy=str(policy))
        return {
            "rc": run["rc"],
            "stdout": run["stdout"],
            "stderr": run["stderr"],
            "written": written.read_text() if written.exists() else None,
            "pids": {"daemon": started[0], "client": client, "worker": unit[1]},
            "hook": verdicts(hook) if "doc" in hook else hook,
            "left": ipcs_keys(),
            "shmids": shmids,
        }
    finally:
        for pid in started:
            sysv.kill9(pid)
        learned.rmdir()
        other.rmdir()


if __name__ == "__main__":
    scenarios.main()

"""A real PostgreSQL 15 cluster in the contained systemd: Debian's postgresql@15-main.service,
its data directory on a tmpfs of the container (the host's /var/lib/postgresql is never
touched), parallel queries forced so that DSM segments beyond the control segment exist.

Shared by tests/e2e/test_postgresql.py and bench/postgres.py.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from typing import NamedTuple

from .container import Container

UNIT = "postgresql@15-main.service"
DATA = "/var/lib/postgresql/15/main"
PG_CTLCLUSTER = "/usr/bin/pg_ctlcluster"
# Every Gather gets 4 workers, whatever the table's size or the planner's costs
PARALLEL = """\
max_worker_processes = 40
max_parallel_workers = 32
max_parallel_workers_per_gather = 4
parallel_setup_cost = 0
parallel_tuple_cost = 0
min_parallel_table_scan_size = 0
min_parallel_index_scan_size = 0
"""
ROWS = 200_000
# A parallel scan that takes ~20 s (pg_sleep is parallel safe): in flight when the kill comes
SLOW_QUERY = "select count(*) from t where pg_sleep(0.0005) is not null"


def available() -> str | None:
    """Why there is no PostgreSQL 15 to run here, or None."""
    if not os.path.exists(PG_CTLCLUSTER) or not os.path.isdir("/usr/lib/postgresql/15/bin"):
        return "needs postgresql 15 (make setup-test)"
    return None


def psql(c: Container, sql: str, check: bool = True) -> str:
    return c.run(f"runuser -u postgres -- psql -XAtq -c {shlex.quote(sql)}", check=check).stdout


def create_cluster(c: Container) -> None:
    """A fresh 15/main on the container's own tmpfs, configured for parallel queries, stopped."""
    c.run(
        "mount -t tmpfs -o mode=0755 tmpfs /var/lib/postgresql"
        " && chown postgres:postgres /var/lib/postgresql"
        " && rm -rf /etc/postgresql/15/main"  # the host's, seen through the /etc overlay
        " && pg_createcluster 15 main >/dev/null"
    )
    c.write("/etc/postgresql/15/main/conf.d/parallel.conf", PARALLEL)
    # its own network namespace (port 5432 is not ours); started again after every kill
    c.write(
        f"/etc/systemd/system/{UNIT}.d/test.conf",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nPrivateNetwork=yes\n",
    )
    c.run("systemctl daemon-reload")


def fill(c: Container) -> None:
    psql(c, f"create table t as select g as x from generate_series(1, {ROWS}) g; analyze t")
    psql(c, "create table kills (n int primary key)")


class ShmFile(NamedTuple):
    name: str
    size: int
    ino: int


def shm_files(c: Container) -> list[ShmFile]:
    out = c.run("find /dev/shm -mindepth 1 -printf '%P %s %i\\n'").stdout
    return sorted(ShmFile(n, int(s), int(i)) for n, s, i in (ln.split() for ln in out.splitlines()))


class Segment(NamedTuple):
    key: int
    shmid: int
    nattch: int
    uid: int


def segments(c: Container) -> list[Segment]:
    rows = c.run("cat /proc/sysvipc/shm").stdout.splitlines()[1:]
    return [
        Segment(int(f[0]) & 0xFFFFFFFF, int(f[1]), int(f[6]), int(f[7]))
        for f in (r.split() for r in rows)
    ]


def postmaster_key(c: Container) -> int:
    """The key of the cluster's System V segment: line 7 of postmaster.pid (key, shmid)."""
    return int(c.run(f"sed -n 7p {DATA}/postmaster.pid").stdout.split()[0])


def unit_pids(c: Container) -> set[int]:
    out = c.run(f"systemctl show -p ControlGroup --value {UNIT}").stdout.strip()
    procs = c.run(  # cgroup v1 (systemd's named hierarchy) or v2
        f"cat /sys/fs/cgroup/systemd{out}/cgroup.procs 2>/dev/null"
        f" || cat /sys/fs/cgroup{out}/cgroup.procs",
        check=False,
    ).stdout
    return {int(p) for p in procs.split()}


def mapped_by_unit(c: Container) -> set[int]:
    """Inodes of the /dev/shm files the cluster's processes map."""
    dev = c.run("stat -c %D /dev/shm").stdout.strip()  # hex, as maps prints it (major:minor)
    major, minor = int(dev, 16) >> 8, int(dev, 16) & 0xFF
    needle = f" {major:02x}:{minor:02x} "
    inodes: set[int] = set()
    for pid in unit_pids(c):
        maps = c.run(f"cat /proc/{pid}/maps", check=False).stdout
        inodes |= {int(ln.split()[4]) for ln in maps.splitlines() if needle in ln}
    return inodes


def parallel_count(c: Container) -> tuple[int, int]:
    """A parallel count(*) of t run to its end (its workers need new DSM segments): the rows
    counted and the workers launched."""
    plan = psql(c, "explain (analyze, costs off, timing off, summary off) select count(*) from t")
    launched = re.search(r"Workers Launched: (\d+)", plan)
    return int(psql(c, "select count(*) from t")), int(launched.group(1)) if launched else 0


def start(c: Container) -> None:
    c.run(f"systemctl start {UNIT}")
    c.wait_until(f'test -n "$(sed -n 8p {DATA}/postmaster.pid | grep ready)"')


def parallel_workers(c: Container) -> int:
    sql = "select count(*) from pg_stat_activity where backend_type = 'parallel worker'"
    return int(psql(c, sql))


def queries_in_flight(c: Container, n: int = 2) -> None:
    """n slow parallel queries started as transient units; returns once their workers run."""
    before = parallel_workers(c)
    for i in range(n):
        c.run(
            f"systemd-run -q --collect --unit=pgq{i}-$(date +%s%N) -p Type=exec "
            f"runuser -u postgres -- psql -XAtq -c {shlex.quote(SLOW_QUERY)}"
        )
    end = time.monotonic() + 30
    while parallel_workers(c) < before + 4 * n:
        if time.monotonic() > end:
            raise TimeoutError(f"{n} parallel queries did not get their workers")
        time.sleep(0.05)


def kill(c: Container) -> float:
    """SIGKILL every process of the cluster's cgroup; wait until systemd has stopped the unit
    (its ExecStopPost=, the hook, run). Returns the seconds that took."""
    t = time.monotonic()
    c.run(f"systemctl kill -s KILL {UNIT}")
    c.wait_until(
        f"s=$(systemctl show -p ActiveState --value {UNIT}); test $s = failed -o $s = inactive"
    )
    return time.monotonic() - t

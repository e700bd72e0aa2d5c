"""What a SIGKILLed PostgreSQL leaves in /dev/shm, with each policy, under a real systemd.

Boots the contained systemd of the e2e tests (tests/e2e/container.py: private namespaces, the
host untouched), makes a real PostgreSQL 15 cluster there (tests/e2e/postgres.py), and for
each policy: starts it, puts parallel queries in flight, SIGKILLs every process of
postgresql@15-main.service, starts it again, KILLS times, and prints the files and bytes in
/dev/shm and the System V segments after each restart.

  none       no hook: PostgreSQL cleans up after itself at each start
  sysv-only  the hook with an owner that claims the cluster's System V segment alone
  names-only the hook with an owner that claims its PostgreSQL.* files alone
  shipped    the hook with packaging/examples/postgresql.toml (both, in one owner)

Run by hand (~60 s): .venv/bin/python bench/postgres.py [POLICY ...]; needs root and
PostgreSQL 15 (make setup-test).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import postgres as pg  # noqa: E402
from tests.e2e.container import Container, available  # noqa: E402

KILLS = int(os.environ.get("BENCH_KILLS", "5"))
EXAMPLE = ROOT / "packaging" / "examples" / "postgresql.toml"
EXAMPLE_KEY = '"0x001c000b"'


def policy(which: str, key: int) -> str | None:
    owner = '[owners.pg]\nunit = "postgresql@15-main.service"\nuid = "postgres"\nmin_age = "0s"\n'
    if which == "sysv-only":
        return owner + f'keys = ["0x{key:08x}"]\nkinds = ["shm"]\n'
    if which == "names-only":
        return owner + 'names = ["PostgreSQL.*"]\nkinds = ["posix-shm"]\n'
    if which == "shipped":
        return EXAMPLE.read_text().replace(EXAMPLE_KEY, f'"0x{key:08x}"')
    return None


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB ({n} bytes)"


def run(which: str) -> list[tuple[int, int, int]]:
    """(files, bytes, segments) in the container after each restart."""
    c = Container()
    try:
        c.start()
        c.run(f"ln -s {ROOT / '.venv' / 'bin' / 'ipcjanitor'} /usr/bin/ipcjanitor")
        pg.create_cluster(c)
        pg.start(c)
        pg.fill(c)
        text = policy(which, pg.postmaster_key(c))
        if text is not None:
            # the container's pid namespace holds every process of its IPC namespace
            c.write("/etc/ipcjanitor/policy.d/ns.toml", "pid_namespace_complete = true\n")
            c.write("/etc/ipcjanitor/policy.d/pg.toml", text)
            c.run(f"ipcjanitor install-hook {pg.UNIT}")
        files = pg.shm_files(c)
        print(f"{which}: started: {len(files)} files, {mib(sum(f.size for f in files))}")
        after = []
        for n in range(1, KILLS + 1):
            pg.queries_in_flight(c)
            files = pg.shm_files(c)
            pg.kill(c)
            pg.start(c)
            now = pg.shm_files(c)
            segs = pg.segments(c)
            after.append((len(now), sum(f.size for f in now), len(segs)))
            print(
                f"{which}: kill {n} ({len(files)} files in flight): {len(now)} files, "
                f"{mib(after[-1][1])} in /dev/shm, {len(segs)} System V segment(s)",
                flush=True,
            )
        records = c.run(
            f"journalctl --no-pager -o json IPCJANITOR_UNIT={pg.UNIT} IPCJANITOR_VERDICT=removed"
        ).stdout.splitlines()
        kinds = Counter(json.loads(r)["IPCJANITOR_KIND"] for r in records if r.strip())
        if text is not None:
            print(f"{which}: the hook removed {dict(kinds) or 'nothing'}")
        return after
    finally:
        c.stop()


def main() -> int:
    why = available() or pg.available()
    if why:
        print(f"bench/postgres.py: {why}", file=sys.stderr)
        return 1
    for which in sys.argv[1:] or ["none", "sysv-only", "names-only", "shipped"]:
        t = time.monotonic()
        run(which)
        print(f"{which}: {time.monotonic() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

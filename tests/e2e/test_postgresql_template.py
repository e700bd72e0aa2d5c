"""The several-clusters owner of packaging/examples/postgresql.toml (commented out there),
under a real systemd with two PostgreSQL 15 clusters, 15/main and 15/reports, and one hook
for the template postgresql@.service: while either cluster runs, the killed one's objects
are kept and its restart cleans up after itself; once both are down, the hook removes the
dead cluster's segment and DSM files."""

from __future__ import annotations

import json

import pytest

from . import postgres as pg
from .conftest import journal
from .container import ROOT, Container, available
from .test_postgresql import _policy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.skipif(pg.available() is not None, reason=str(pg.available())),
]

EXAMPLE = ROOT / "packaging" / "examples" / "postgresql.toml"
REPORTS = "postgresql@15-reports.service"
REPORTS_DATA = "/var/lib/postgresql/15/reports"


def _template_owner(keys: list[int]) -> str:
    """The example's commented several-clusters owner, uncommented, with these keys."""
    text = EXAMPLE.read_text()
    block = text[text.index("#   [owners.postgresql]") :].split("\n#\n")[0]
    lines = [ln.removeprefix("#   ") for ln in block.splitlines()]
    keyed = [
        "keys = [" + ", ".join(f'"0x{k:08x}"' for k in keys) + "]"
        if ln.startswith("keys = ")
        else ln
        for ln in lines
    ]
    return "\n".join(keyed) + "\n"


def _start_reports(box: Container) -> int:
    """15/reports beside 15/main (another port), started; returns its System V key."""
    box.run("rm -rf /etc/postgresql/15/reports && pg_createcluster 15 reports >/dev/null")
    box.write(
        f"/etc/systemd/system/{REPORTS}.d/test.conf",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nPrivateNetwork=yes\n",
    )
    box.run(f"systemctl daemon-reload && systemctl start {REPORTS}")
    box.wait_until(f'test -n "$(sed -n 8p {REPORTS_DATA}/postmaster.pid | grep ready)"')
    return int(box.run(f"sed -n 7p {REPORTS_DATA}/postmaster.pid").stdout.split()[0])


def _removed(box: Container) -> list[dict[str, object]]:
    return journal(box, "IPCJANITOR_VERDICT=removed")


def test_the_template_owner_keeps_a_killed_cluster_while_another_runs(box: Container) -> None:
    pg.create_cluster(box)
    pg.start(box)
    pg.fill(box)
    main_key = pg.postmaster_key(box)
    reports_key = _start_reports(box)
    owner = _template_owner([main_key, reports_key])
    assert 'unit = "postgresql@.service"' in owner and 'names = ["PostgreSQL.*"]' in owner
    _policy(box, owner)
    box.run("ipcjanitor policy check && ipcjanitor install-hook postgresql@.service")
    # main killed with parallel queries in flight while reports runs: nothing removed
    pg.psql(box, "insert into kills values (1)")
    pg.queries_in_flight(box)
    in_flight = set(pg.shm_files(box))
    mains = pg.mapped_by_unit(box)  # 15/main's: control segment, statistics, the queries'
    assert len(mains) > 2 and len(in_flight) - len(mains) == 2  # and 15/reports' two
    pg.kill(box)
    assert set(pg.shm_files(box)) == in_flight  # the dead cluster's files, kept
    assert len(pg.segments(box)) == 2 and _removed(box) == []
    doc = json.loads(box.run("ipcjanitor scan --json").stdout)
    assert {o["verdict"] for o in doc["objects"]} == {"in-use"}, doc["objects"]
    # its restart finds its dead segment, and through it removes its old DSM files itself
    pg.start(box)
    files = pg.shm_files(box)
    assert len(files) == 4 and not {f.ino for f in files} & mains, (files, in_flight)
    assert {f for f in in_flight if f.ino not in mains} <= set(files)  # reports', untouched
    assert len(pg.segments(box)) == 2 and _removed(box) == []  # PostgreSQL's work, not ours
    assert pg.psql(box, "select n from kills").split() == ["1"]
    # reports stopped cleanly, main killed again: no cluster runs, the hook removes main's
    box.run(f"systemctl stop {REPORTS}")
    pg.queries_in_flight(box)
    dead = set(pg.shm_files(box))
    dead_segments = {s.shmid for s in pg.segments(box)}
    pg.kill(box)
    assert pg.shm_files(box) == [] and pg.segments(box) == []
    removed = _removed(box)
    assert {r["IPCJANITOR_OWNER"] for r in removed} == {"postgresql"}
    assert {r.get("IPCJANITOR_NAME") for r in removed} - {None} == {f.name for f in dead}
    assert {int(str(r["IPCJANITOR_ID"])) for r in removed if r["IPCJANITOR_KIND"] == "shm"} == (
        dead_segments
    )
    pg.start(box)
    assert len(pg.shm_files(box)) == 2 and pg.psql(box, "select n from kills").split() == ["1"]
    box.run(f"systemctl stop {pg.UNIT}")

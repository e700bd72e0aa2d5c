"""scan -v hints: a running unit's System V objects claimed, the /dev/shm files its processes
map claimed by no owner (PostgreSQL's case before its names are claimed). A fake /proc and a
plain directory standing in for /dev/shm: no IPC object is made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.commands.hints import suggest_names, unclaimed_mappings
from ipcjanitor.kernel.posix import list_posix
from ipcjanitor.model import Decision, IpcKind, IpcObject, PosixKind, PosixObject, Verdict
from ipcjanitor.policy.model import Owner, Policy

PG_UNIT = "postgresql@15-main.service"
CGROUP = "0::/system.slice/system-postgresql.slice/postgresql@15-main.service\n"


def segment_decision(owner: str | None = "pg") -> Decision:
    seg = IpcObject(IpcKind.SHM, 32769, 0x6B11B58E, 101, 104, 101, 104, 0o600, size=56, nattch=6)
    return Decision(seg, owner, Verdict.IN_USE, f"{PG_UNIT} is running")


class Host:
    """A fake /proc of processes in units, mapping files of a fake /dev/shm."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = tmp_path / "proc"
        self.shm = tmp_path / "shm"
        self.proc.mkdir()
        self.shm.mkdir()
        self.dev = os.stat(self.shm).st_dev

    def file(self, name: str, size: int = 4096) -> int:
        path = self.shm / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
        return os.stat(path).st_ino

    def process(self, pid: int, cgroup: str, *mapped: str) -> None:
        d = self.proc / str(pid)
        d.mkdir()
        (d / "cgroup").write_text(cgroup)
        dev = f"{os.major(self.dev):02x}:{os.minor(self.dev):02x}"
        lines = [
            "55d4c0a00000-55d4c0b00000 r-xp 00000000 08:01 131 /usr/lib/postgresql/15/bin/postgres",
            "7f0000000000-7f0000001000 rw-s 00000000 00:01 32769 /SYSV6b11b58e (deleted)",
        ]
        for name in mapped:
            ino = os.stat(self.shm / name).st_ino
            lines.append(f"7f0000100000-7f0000200000 rw-s 00000000 {dev} {ino} /dev/shm/{name}")
        (d / "maps").write_text("\n".join(lines) + "\n")

    def hints(self, policy: Policy, decisions: list[Decision]) -> list[str]:
        return unclaimed_mappings(policy, decisions, procfs=self.proc, shm_root=self.shm)


SYSV_ONLY = Owner(name="pg", key_ranges=((0x6B11B58E, 0x6B11B58E),), unit=PG_UNIT, uid=os.getuid())


def test_postgresql_before_its_names_are_claimed(tmp_path: Path) -> None:
    h = Host(tmp_path)
    for name in ("PostgreSQL.2299180038", "PostgreSQL.542949300", "PostgreSQL.409434682"):
        h.file(name)
    h.file("psm_other")  # mapped by another unit's process: not this unit's
    h.file("PostgreSQL.17")  # mapped by no one (a dead cluster's): no hint names it
    h.process(162, CGROUP, "PostgreSQL.2299180038", "PostgreSQL.542949300")
    h.process(178, CGROUP, "PostgreSQL.2299180038", "PostgreSQL.409434682")
    h.process(300, "0::/system.slice/other.service\n", "psm_other")
    (hint,) = h.hints(Policy(owners=(SYSV_ONLY,)), [segment_decision()])
    assert hint.startswith(f"owner pg claims the System V objects of {PG_UNIT}, but ")
    for name in ("PostgreSQL.2299180038", "PostgreSQL.409434682", "PostgreSQL.542949300"):
        assert f"{h.shm}/{name}" in hint
    assert "psm_other" not in hint and f"{h.shm}/PostgreSQL.17" not in hint
    assert "claimed by no owner" in hint
    assert "through its segment's header" in hint  # why it matters: PostgreSQL's recovery
    assert 'names = ["PostgreSQL.*"]' in hint


def test_no_hint_once_the_names_are_claimed(tmp_path: Path) -> None:
    h = Host(tmp_path)
    h.file("PostgreSQL.1")
    h.process(162, CGROUP, "PostgreSQL.1")
    whole = SYSV_ONLY._replace(names=("PostgreSQL.*",), posix_kinds=frozenset(PosixKind))
    assert h.hints(Policy(owners=(whole,)), [segment_decision()]) == []


def test_no_hint_without_a_running_unit_or_a_claimed_segment(tmp_path: Path) -> None:
    h = Host(tmp_path)
    h.file("PostgreSQL.1")
    policy = Policy(owners=(SYSV_ONLY,))
    assert h.hints(policy, [segment_decision()]) == []  # no process in the unit
    h.process(162, CGROUP, "PostgreSQL.1")
    assert h.hints(policy, [segment_decision(owner=None)]) == []  # segment unowned
    assert h.hints(policy, []) == []
    unitless = Policy(owners=(SYSV_ONLY._replace(unit=None),))
    assert h.hints(unitless, [segment_decision()]) == []


def test_another_users_files_stop_the_pattern(tmp_path: Path) -> None:
    h = Host(tmp_path)
    h.file("app.buf0")
    h.file("app.buf1")
    h.process(162, CGROUP, "app.buf0", "app.buf1")
    mine = [o for o in _listing(h) if o.name.startswith("app.")]
    assert suggest_names(mine, mine, Policy()) == '"app.*"'
    other = mine[0]._replace(name="app.theirs", uid=os.getuid() + 1, ino=1)
    assert suggest_names(mine, [*mine, other], Policy()) == '"app.buf0", "app.buf1"'


def test_hostile_names_are_escaped_and_never_suggested(tmp_path: Path) -> None:
    h = Host(tmp_path)
    h.file("x\x1b[2Jy")
    h.process(162, CGROUP)
    ino = os.stat(h.shm / "x\x1b[2Jy").st_ino
    dev = f"{os.major(h.dev):02x}:{os.minor(h.dev):02x}"
    with (h.proc / "162" / "maps").open("a") as f:
        f.write(f"7f0000300000-7f0000400000 rw-s 00000000 {dev} {ino} /dev/shm/x\n")
    (hint,) = h.hints(Policy(owners=(SYSV_ONLY,)), [segment_decision()])
    assert "\x1b" not in hint and "x\\x1b[2Jy" in hint
    assert "names = [...]" in hint


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["psm_a1b2", "psm_c3d4"], '"psm_*"'),
        (["vllm_offload_1.mmap"], '"vllm_offload_*"'),
        (["abc", "abd"], '"abc", "abd"'),  # no separator to stop at: the exact names
        (["a/b1", "a/b2"], '"a/*"'),
    ],
)
def test_suggested_patterns(tmp_path: Path, names: list[str], expected: str) -> None:
    h = Host(tmp_path)
    for n in names:
        h.file(n)
    objs = _listing(h)
    assert suggest_names(objs, objs, Policy()) == expected


def _listing(h: Host) -> list[PosixObject]:
    return list(list_posix({PosixKind.SHM, PosixKind.SEM}, h.proc, h.shm).objects)

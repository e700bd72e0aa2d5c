"""Golden renderings: what an operator reads, pinned for a fixed set of decisions.

`scan` (the table with its notes and summary), `scan --json`, `policy check` and `doctor`
(text and JSON) are rendered from fixed inputs and compared with tests/golden/*. A change of
wording, column or escaping shows as a diff here; when it is meant, `make golden` rewrites
the files (IPCJANITOR_GOLDEN=update) and the diff is reviewed with the change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor import cli
from ipcjanitor.commands import doctor, limits
from ipcjanitor.model import Decision, IpcKind, IpcObject, PidRecord, Verdict
from ipcjanitor.output import report

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("IPCJANITOR_GOLDEN") == "update"
NOBODY_UID = 4242  # no such user on a test machine: the table shows the number


def _shm(id_: int, key: int, nattch: int, uid: int = 0) -> IpcObject:
    pids = (PidRecord("creator", 812), PidRecord("last shmat/shmdt", 813))
    return IpcObject(IpcKind.SHM, id_, key, uid, uid, uid, uid, 0o600, size=1048576,
                     nattch=nattch, pids=pids,
                     times=(("attached", 1764700000), ("detached", 0), ("changed", 1764690000)))  # fmt: skip


def _sem(id_: int, key: int, uid: int = 0) -> IpcObject:
    return IpcObject(IpcKind.SEM, id_, key, uid, uid, uid, uid, 0o666, nsems=3,
                     pids=(PidRecord("last semop on sem 0", 0, traced=False),),
                     times=(("operated", 0), ("changed", 1764690000)))  # fmt: skip


def _msg(id_: int, key: int, qnum: int) -> IpcObject:
    pids = (PidRecord("creator", 90), PidRecord("last sender", 91), PidRecord("last receiver", 0))
    return IpcObject(IpcKind.MSG, id_, key, NOBODY_UID, NOBODY_UID, NOBODY_UID, NOBODY_UID,
                     0o640, qnum=qnum, qbytes=64 * qnum, pids=pids,
                     times=(("sent", 1764700000), ("received", 0), ("changed", 1764690000)))  # fmt: skip


DECISIONS = [
    Decision(_shm(0, 0x6104E88B, 0), "php-daemon", Verdict.STALE,
             "creator pid 812 and last attacher pid 813 are dead; nothing attached"),
    Decision(_shm(1, 0x6104E88C, 2), "php-daemon", Verdict.IN_USE, "2 attached"),
    Decision(_sem(2, 0x6104E88B), "php-daemon", Verdict.UNKNOWN,
             "semaphore 0 records no pid: a process outside this pid namespace may hold it"),
    Decision(_msg(3, 0x00000000, 4), None, Verdict.UNOWNED, "no owner claims key IPC_PRIVATE"),
    Decision(_msg(4, 0x7A000001, 2), "queue", Verdict.HOLDS_DATA,
             "2 messages queued; keep_queued_messages = true"),
    Decision(_shm(5, 0x7A000002, 0), "queue", Verdict.YOUNG, "last used 3 s ago (min_age 10m)"),
    Decision(_shm(6, 0x7A000003, 0, NOBODY_UID), "queue", Verdict.REMOVED,
             "creator pid 812 is dead; removed"),
]  # fmt: skip


def _compare(name: str, text: str, golden: Path = GOLDEN, update: bool = UPDATE) -> None:
    path = golden / name
    if update:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run `make golden` and review it"
    assert text == path.read_text(), f"{name} changed: if that is meant, run `make golden`"


def test_scan_table(capsys: pytest.CaptureFixture[str]) -> None:
    report.emit(DECISIONS, as_json=False, quiet=False,
                notes=["policy from /etc/ipcjanitor/policy.toml"])  # fmt: skip
    _compare("scan.txt", capsys.readouterr().out)


def test_scan_json(capsys: pytest.CaptureFixture[str]) -> None:
    report.emit(DECISIONS, as_json=True, quiet=False, notes=["a note"], extra={"dry_run": True})
    _compare("scan.json", capsys.readouterr().out)


POLICY = """\
min_age = "10m"

[owners.php-daemon]
unit = "php-daemon.service"
keys = ["0x6104e88b", "0x6104e88c"]
min_age = "0s"

[owners.queue]
uid = "root"
keys = ["0x7a000001-0x7a0000ff"]
kinds = ["msg", "shm"]
keep_queued_messages = true
"""


def test_policy_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    code = cli.main(["policy", "check", str(policy)])
    out = capsys.readouterr().out.replace(str(tmp_path), "/srv/app")
    _compare("policy-check.txt", f"{out}exit {code}\n")


REPORT = doctor.Report(
    limits=[
        limits.LimitRow("shm", "objects", "kernel.shmmni", 3900, 4096, 3700),
        limits.LimitRow("shm", "pages", "kernel.shmall", 256, 18446744073692774399, 0),
        limits.LimitRow("sem", "objects", "kernel.sem (semmni)", 12, 32000, None),
        limits.LimitRow("msg", "objects", "kernel.msgmni", 80, 32000, 0),
    ],
    stuck_pipes=[
        doctor.StuckPipe(
            pid=4410,
            command="worker",
            fds=[1, 2],
            read_fds=[5],
            inode=991,
            unit="app.service",
            orphaned=True,
            holds_read_end=True,
            wchan="pipe_write",
            tid=4410,
            syscall="write",
            target="pipe:[991]",
            reader="self",
            unreadable=[],
            unknown=None,
        ),
        doctor.StuckPipe(  # run as a user: another user's process may read it
            pid=5120,
            command="logger",
            fds=[7],
            read_fds=[],
            inode=40117,
            unit=None,
            orphaned=False,
            holds_read_end=False,
            wchan="pipe_wait_writable",
            tid=5123,
            syscall="splice",
            target="/run/app/log.fifo",
            reader="unknown",
            unreadable=[1, 812],
            unknown="the fds of pid 1, 812 could not be read (run doctor as root)",
        ),
    ],
    hooks_missing=[
        {
            "owner": "php-daemon",
            "unit": "php-daemon.service",
            "fix": "ipcjanitor install-hook php-daemon.service",
        },
        {
            "owner": "web",
            "unit": "web.service",
            "problem": "RootDirectory=/srv/root",
            "fix": "set RootDirectoryStartOnly=yes",
        },
    ],
    notes=["hidepid=2 on /proc: other users' processes are not seen"],
)


def test_doctor_text() -> None:
    _compare("doctor.txt", REPORT.text() + "\n")


def test_doctor_json() -> None:
    _compare("doctor.json", REPORT.json() + "\n")


def test_a_changed_rendering_fails(tmp_path: Path) -> None:
    """The comparison bites: a rendering one character off its golden file fails."""
    (tmp_path / "x.txt").write_text("a\n")
    with pytest.raises(AssertionError, match="changed"):
        _compare("x.txt", "b\n", tmp_path, update=False)
    with pytest.raises(AssertionError, match="missing"):
        _compare("y.txt", "b\n", tmp_path, update=False)

"""The remover's re-check and errno mapping, with the kernel calls replaced."""

from __future__ import annotations

import errno

import pytest

from ipcjanitor import _sysvipc, remove
from ipcjanitor.model import Decision, IpcKind, IpcObject, PidRecord, Verdict

OBJ = IpcObject(
    IpcKind.SHM,
    7,
    0x10,
    0,
    0,
    0,
    0,
    0o600,
    size=1,
    nattch=0,
    pids=(PidRecord("creator", 5), PidRecord("last shmat/shmdt", 5)),
    times=(("atime", 100), ("dtime", 100), ("ctime", 90)),
)
STALE = Decision(OBJ, "app", Verdict.STALE, "creator pid 5 exited")


def raising(code: int):
    def fn(*_a: object) -> None:
        raise OSError(code, "x")

    return fn


@pytest.mark.parametrize(
    ("now", "verdict", "fragment"),
    [
        (None, Verdict.CHANGED, "vanished"),
        (OBJ._replace(key=0x11), Verdict.CHANGED, "id was reused"),
        (
            OBJ._replace(times=(("atime", 100), ("dtime", 100), ("ctime", 95))),
            Verdict.CHANGED,
            "id was reused",
        ),
        (OBJ._replace(nattch=1), Verdict.CHANGED, "nattch changed"),
        (
            OBJ._replace(pids=(PidRecord("creator", 5), PidRecord("last shmat/shmdt", 6))),
            Verdict.CHANGED,
            "pids changed",
        ),
        (
            OBJ._replace(times=(("atime", 200), ("dtime", 100), ("ctime", 90))),
            Verdict.CHANGED,
            "used since",
        ),
    ],
)
def test_recheck(
    now: IpcObject | None, verdict: Verdict, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sysvipc, "rmid", raising(errno.ENOSYS))  # must not be reached
    d = remove.remove_one(STALE, lambda k, i: now)
    assert d.verdict is verdict and fragment in d.reason


@pytest.mark.parametrize(
    ("code", "verdict", "fragment"),
    [
        (errno.EPERM, Verdict.FAILED, "EPERM"),
        (errno.EINVAL, Verdict.CHANGED, "vanished"),
        (errno.EIDRM, Verdict.CHANGED, "vanished"),
        (errno.ENOMEM, Verdict.FAILED, "ENOMEM"),
    ],
)
def test_rmid_errno(
    code: int, verdict: Verdict, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sysvipc, "rmid", raising(code))
    d = remove.remove_one(STALE, lambda k, i: OBJ)
    assert d.verdict is verdict and fragment in d.reason


def test_recheck_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(k: IpcKind, i: int) -> IpcObject:
        raise OSError(errno.EACCES, "x")

    d = remove.remove_one(STALE, denied)
    assert d.verdict is Verdict.FAILED and "EACCES" in d.reason


def test_only_stale_objects_are_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(_sysvipc, "rmid", lambda k, i: calls.append((k, i)))
    kept = STALE._replace(verdict=Verdict.IN_USE)
    out = list(remove.remove_stale([kept, STALE], lambda k, i: OBJ))
    assert [d.verdict for d in out] == [Verdict.IN_USE, Verdict.REMOVED] and calls == [(0, 7)]

"""doctor's pure parts: limits against use, and the missing-hook hint."""

from __future__ import annotations

from pathlib import Path

from ipcjanitor.commands.doctor import Limits, limit_rows, missing_hooks
from ipcjanitor.model import IpcKind, IpcObject
from ipcjanitor.policy.model import Owner, Policy
from ipcjanitor.systemd import unitctx

LIMITS = Limits(shmmni=10, shmall=100, semmni=10, semmns=20, msgmni=10)


def o(kind: IpcKind, size: int = 0, nsems: int = 0) -> IpcObject:
    return IpcObject(kind, 0, 1, 0, 0, 0, 0, 0o600, size=size, nsems=nsems)


def test_ninety_percent_is_a_problem_eighty_is_not() -> None:
    rows = limit_rows([o(IpcKind.SHM, 4096)] * 9, LIMITS, {IpcKind.SHM: 4})
    shm = rows[0]
    assert (shm.used, shm.max, shm.problem, shm.stale) == (9, 10, True, 4)
    assert not limit_rows([o(IpcKind.SHM)] * 8, LIMITS, None)[0].problem


def test_pages_and_semaphores_are_counted_by_size() -> None:
    rows = limit_rows(
        [o(IpcKind.SHM, 4096 * 50 + 1)] * 2 + [o(IpcKind.SEM, nsems=19)], LIMITS, None
    )
    by = {(r.kind, r.measure): r for r in rows}
    assert by[("shm", "pages")].used == 102 and by[("shm", "pages")].problem
    assert by[("sem", "semaphores")].used == 19 and by[("sem", "semaphores")].problem
    assert by[("sem", "objects")].used == 1 and not by[("sem", "objects")].problem
    assert by[("msg", "objects")].used == 0 and by[("msg", "objects")].stale is None


def test_owners_without_a_hook_are_listed_with_the_fix(tmp_path: Path) -> None:
    policy = Policy(
        owners=(
            Owner(name="a", key_ranges=((1, 1),), unit="a.service"),
            Owner(name="b", key_ranges=((2, 2),)),
        )
    )
    assert missing_hooks(policy, [tmp_path]) == [
        {"owner": "a", "unit": "a.service", "fix": "ipcjanitor install-hook a.service"}
    ]
    dropin = tmp_path / "a.service.d" / "ipcjanitor.conf"
    dropin.parent.mkdir()
    dropin.write_text(
        '[Service]\nExecStopPost=-+"/usr/lib/python3/dist-packages/ipcjanitor/ipcjanitor-hook" '
        '"/usr/bin/ipcjanitor" "hook" "--unit=%n"\n'
    )
    loaded = unitctx.parse_show("a.service", "LoadState=loaded\n")  # what systemd would say
    assert missing_hooks(policy, [tmp_path], lambda unit: (loaded, None)) == []


def test_a_hook_without_the_clean_environment_is_a_problem(tmp_path: Path) -> None:
    """A drop-in of an older install-hook runs the hook with the service's environment
    (PYTHONPATH, LD_PRELOAD as root): doctor says so, and it is a problem, not a hint."""
    from ipcjanitor.commands.doctor import Report

    policy = Policy(owners=(Owner(name="a", key_ranges=((1, 1),), unit="a.service"),))
    dropin = tmp_path / "a.service.d" / "ipcjanitor.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nExecStopPost=-+/usr/bin/ipcjanitor hook --unit=%n\n")
    (row,) = missing_hooks(policy, [tmp_path])
    assert row["fix"] == "ipcjanitor install-hook a.service"
    assert "without a clean environment" in row["problem"]
    report = Report([], [], [row], [])
    assert not report.healthy and "UNSAFE HOOK: owner a: a.service" in report.text()

"""doctor's and scan -v's line on objects unknown only for the pid namespace (issue 20)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipcjanitor.commands import pidns
from ipcjanitor.model import Verdict

HIDDEN = "last semop on sem 1 pid reads 0, which may hide a pid (ipcjanitor runs outside the host's pid namespace: ...)"
ZERO = "last semop on sem 0 pid reads 0 although its value is not 0: that process is hidden from our pid namespace"


def test_one_line_names_the_manager_and_what_the_setting_asserts() -> None:
    line = pidns.pid_namespace_line(
        [(Verdict.UNKNOWN, HIDDEN), (Verdict.UNKNOWN, ZERO), (Verdict.STALE, "x")], True, "lxc"
    )
    assert line is not None
    assert line.startswith(
        "2 object(s) are unknown only because ipcjanitor runs in a container (lxc)"
    )
    assert (
        "`pid_namespace_complete = true` in the policy asserts that this pid namespace holds "
        "every process of its IPC namespace" in line
    )
    nameless = pidns.pid_namespace_line([(Verdict.UNKNOWN, HIDDEN)], True, None)
    assert nameless is not None and "runs in another pid namespace" in nameless


@pytest.mark.parametrize(
    "verdicts, outside",
    [
        ([(Verdict.UNKNOWN, HIDDEN)], False),  # the host's namespace, or pid_namespace_complete
        ([(Verdict.UNKNOWN, HIDDEN), (Verdict.UNKNOWN, "cannot read /proc/7/maps")], True),
        ([(Verdict.IN_USE, "1 attached")], True),  # nothing unknown
    ],
)
def test_no_line_unless_the_pid_namespace_alone_made_them_unknown(
    verdicts: list[tuple[Verdict, str]], outside: bool
) -> None:
    assert pidns.pid_namespace_line(verdicts, outside, "lxc") is None


def test_the_manager_from_systemds_record_else_detect_virt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "container"
    monkeypatch.setattr(pidns, "CONTAINER_RECORD", record)
    record.write_text("systemd-nspawn\n")
    assert pidns.container_manager() == "systemd-nspawn"
    record.unlink()
    detect = tmp_path / "detect"
    detect.write_text("#!/bin/sh\necho none; exit 1\n")
    detect.chmod(0o755)
    assert pidns.container_manager(str(detect)) is None
    detect.write_text("#!/bin/sh\necho lxc\n")
    assert pidns.container_manager(str(detect)) == "lxc"
    assert pidns.container_manager(str(tmp_path / "absent")) is None

"""The shipped units: hardened as claimed, every directive explained, nothing that blinds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).parent.parent / "units"
SERVICE = UNITS / "ipcjanitor.service"
NOT_HARDENING = {"Type", "ExecStart", "ExecStopPost"}
BLINDING = ("PrivateIPC", "IPCNamespacePath", "ProcSubset", "ProtectProc", "PrivateUsers",
            "User", "DynamicUser", "PrivatePIDs", "PrivateTmp")  # fmt: skip


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", ["ipcjanitor.service", "ipcjanitor-hook.service"])
def test_exposure_is_at_most_2_0(unit: str) -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(UNITS / unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    assert level <= 2.0


def service_lines() -> list[str]:
    text = SERVICE.read_text().split("[Service]\n", 1)[1]
    return text.splitlines()


def test_every_hardening_directive_has_a_reason_above_it() -> None:
    lines = service_lines()
    for i, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if key not in NOT_HARDENING:
            assert lines[i - 1].startswith("# "), f"{line!r} has no reason on the line above"


def test_nothing_that_would_blind_it_and_each_absence_is_explained() -> None:
    keys = {ln.split("=", 1)[0] for ln in service_lines() if ln and not ln.startswith("#")}
    assert not keys & set(BLINDING)
    comments = "\n".join(ln for ln in service_lines() if ln.startswith("#"))
    for key in BLINDING:
        assert f"{key}=" in comments, f"say why {key}= is absent"


def settings() -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in service_lines() if ln and not ln.startswith("#"))


def test_it_sees_the_files_scan_sees() -> None:
    # ftok keys are st_dev and st_ino: a read-only view of the same mount keeps them, a fresh
    # tmpfs (ProtectHome=yes/tmpfs, PrivateTmp=) hides the file and the entry is skipped
    assert settings().get("ProtectHome", "no") in ("no", "read-only")
    assert settings().get("PrivateTmp", "no") == "no"
    assert "CAP_DAC_READ_SEARCH" in settings()["CapabilityBoundingSet"].split()  # 0700 homes


def test_it_may_see_other_users_processes_and_says_what_each_capability_buys() -> None:
    caps = settings()["CapabilityBoundingSet"].split()
    assert "CAP_SYS_PTRACE" in caps  # hidepid=, and other users' /proc/PID/syscall
    assert "CAP_LEASE" in caps  # the kernel's word that another user's /dev/shm file is unopened
    lines = service_lines()
    end = next(i for i, ln in enumerate(lines) if ln.startswith("CapabilityBoundingSet="))
    start = max(i for i in range(end) if not lines[i].startswith("#")) + 1
    reasons = "\n".join(lines[start:end])
    for cap in caps:
        assert re.search(rf"^#\s+{cap}\s+- \S", reasons, re.M), f"say what {cap} buys"


# Directories that a packaged service's user owns on Debian: that user can rename anything in
# them, and swap a subdirectory for a symlink, which systemd follows when it sets up the mount.
NOT_ROOTS = {"/var/lib/prometheus": "prometheus (prometheus-node-exporter's postinst)"}


def test_read_write_paths_name_no_directory_another_user_can_replace() -> None:
    paths = [p.lstrip("-+") for p in settings()["ReadWritePaths"].split()]
    assert paths
    for path in paths:
        for theirs, who in NOT_ROOTS.items():
            assert not path.startswith(theirs + "/"), f"{path} is in {theirs}, owned by {who}"


CLOCK_TIMER = UNITS / "ipcjanitor-clock.timer"
RECORD = "/run/ipcjanitor/clock-steps"
CLOCK_SERVICE = UNITS / "ipcjanitor-clock.service"


def unit_settings(path: Path, section: str) -> dict[str, str]:
    text = path.read_text().split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
    return dict(ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))


def test_the_clock_recorder_fires_on_every_clock_change_and_when_it_starts() -> None:
    """systemd.timer(5): OnClockChange= elapses on every jump of CLOCK_REALTIME; OnActiveSec=0
    takes the first reading as the timer starts (the offset before any change), at once."""
    timer = unit_settings(CLOCK_TIMER, "Timer")
    assert timer["OnClockChange"] == "yes"
    assert timer["OnActiveSec"] == "0"
    assert timer["AccuracySec"] == "1us"  # the default 1min would delay the first reading
    assert "Persistent" not in timer and "RandomizedDelaySec" not in timer
    assert unit_settings(CLOCK_TIMER, "Install")["WantedBy"] == "timers.target"
    service = unit_settings(CLOCK_SERVICE, "Service")
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == "/usr/bin/ipcjanitor record-clock"
    # a reading lost removes the record, which would otherwise look complete and miss a step
    assert "$$SERVICE_RESULT" in service["ExecStopPost"] and RECORD in service["ExecStopPost"]
    assert unit_settings(CLOCK_SERVICE, "Unit")["StartLimitIntervalSec"] == "0"
    # the same directory as the run lock's, root's alone, kept between runs
    assert service["RuntimeDirectory"] == "ipcjanitor"
    assert service["RuntimeDirectoryMode"] == "0700"
    assert service["RuntimeDirectoryPreserve"] == "yes"
    unit = unit_settings(CLOCK_SERVICE, "Unit")
    # before the services of the boot start: their processes' steps are all recorded
    assert unit["DefaultDependencies"] == "no" and "basic.target" in unit["Before"].split()


def test_the_clock_recorder_is_hardened_and_says_why() -> None:
    lines = CLOCK_SERVICE.read_text().split("[Service]\n", 1)[1].splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#") and line.split("=", 1)[0] not in NOT_HARDENING:
            assert lines[i - 1].startswith("# "), f"{line!r} has no reason on the line above"
    service = unit_settings(CLOCK_SERVICE, "Service")
    assert service["CapabilityBoundingSet"] == ""
    assert service["PrivateNetwork"] == "yes" and service["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_clock_recorders_exposure_is_at_most_1_0() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=10", str(CLOCK_SERVICE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


PACKAGING = UNITS.parent / "packaging"


def test_the_packages_ship_and_enable_the_clock_recorder_and_never_restart_it() -> None:
    """A restart of the timer leaves a moment in which a step goes unrecorded: every process
    started before it loses its proof of PID reuse, so upgrades leave the timer running."""
    rules = (PACKAGING / "debian" / "rules").read_text()
    assert (
        "dh_installsystemd --name=ipcjanitor-clock --no-stop-on-upgrade ipcjanitor-clock.timer"
        in rules
    )
    for unit in ("ipcjanitor-clock.service", "ipcjanitor-clock.timer"):
        # dh's package.name.unit, a link into the tree `make deb` copies debian/ into
        shipped = PACKAGING / "debian" / f"ipcjanitor.{unit}"
        assert os.readlink(shipped) == f"../units/{unit}" and (UNITS / unit).is_file()
    spec = (PACKAGING / "rpm" / "ipcjanitor.spec").read_text()
    assert "%systemd_post ipcjanitor.timer ipcjanitor-clock.timer" in spec
    for unit in ("ipcjanitor-clock.service", "ipcjanitor-clock.timer"):
        assert f"%{{_unitdir}}/{unit}" in spec
    restart = next(ln for ln in spec.splitlines() if ln.startswith("%systemd_postun_with_restart"))
    assert "ipcjanitor-clock" not in restart


HOOK_SOCKET = UNITS / "ipcjanitor-hook.socket"
HOOK_SERVICE = UNITS / "ipcjanitor-hook.service"
HOOK_C = UNITS.parent / "ipcjanitor" / "ipcjanitor-hook.c"


def test_the_hook_server_listens_where_the_launcher_asks_and_only_for_root() -> None:
    from ipcjanitor.hook.serve import SOCKET_PATH

    sock = unit_settings(HOOK_SOCKET, "Socket")
    assert sock["ListenStream"] == SOCKET_PATH
    assert f'#define SOCKET_PATH "{SOCKET_PATH}"' in HOOK_C.read_text()
    assert sock["SocketMode"] == "0600" and sock["Accept"] == "no"
    assert unit_settings(HOOK_SOCKET, "Install")["WantedBy"] == "sockets.target"


def test_the_hook_server_is_hardened_as_the_sweep_and_runs_at_normal_priority() -> None:
    server, sweep = unit_settings(HOOK_SERVICE, "Service"), settings()
    assert server["ExecStart"] == "/usr/bin/ipcjanitor serve-hooks"
    assert "Nice" not in server and "IOSchedulingClass" not in server  # on the restart path
    for key in ("Type", "ExecStart", "TimeoutStartSec", "Nice", "IOSchedulingClass"):
        server.pop(key, None)
        sweep.pop(key, None)
    assert server == sweep
    assert unit_settings(HOOK_SERVICE, "Unit")["Requires"] == "ipcjanitor-hook.socket"


def _syscalls(group: str) -> set[str]:
    """The system calls of a systemd syscall group, its nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", group],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    names = {ln.strip() for ln in out.splitlines()[1:] if ln.strip() and "#" not in ln}
    return set().union(*(_syscalls(n) if n.startswith("@") else {n} for n in names))


def test_its_system_call_filter_lets_kcmp_through() -> None:
    """The holder scan asks kcmp(2) whether a thread's fd table is its leader's (holders.py);
    filtered out (EPERM), every thread of every multi-threaded process would be read."""
    allowed: set[str] = set()
    denied: set[str] = set()
    for line in service_lines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            into, value = (denied, value[1:]) if value.startswith("~") else (allowed, value)
            for item in value.split():
                into |= _syscalls(item) if item.startswith("@") else {item}
    assert "kcmp" in allowed and "kcmp" not in denied, (len(allowed), len(denied))

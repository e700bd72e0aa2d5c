"""The engine's proofs under a real systemd: what only a booted system can show."""

from __future__ import annotations

import json
import shutil

import pytest

from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

HOLDER = (
    "import ctypes, time; libc = ctypes.CDLL(None);"
    " assert libc.shmget(0x70000020, 4096, 0o1600) >= 0; time.sleep(600)"
)


@pytest.mark.skipif(
    shutil.which("faketime") is None, reason="needs faketime (apt-get install faketime)"
)
def test_a_clock_step_before_the_first_run_never_passes_a_live_creator_off_as_dead(
    box: Container,
) -> None:
    """The wall clock stepped forward after boot (NTP), before ipcjanitor's first run.

    faketime moves the janitor's wall clock 30 s ahead of the kernel's (its monotonic and
    boot clocks stay true): to the janitor, exactly a 30 s forward step since boot. The live
    creator then seems to have started 30 s after its own object: "PID reuse", unless the step
    is measured from systemd's record of userspace start, as it now is.
    """
    box.run(f"systemd-run --unit=holder.service /usr/bin/python3 -c '{HOLDER}'")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    holder = int(box.run("systemctl show -p MainPID --value holder.service").stdout)
    out = box.run(
        "FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f +30s ipcjanitor scan --json --owner orphans"
    ).stdout
    (obj,) = json.loads(out)["objects"]
    assert obj["key"] == "0x70000020" and obj["cpid"] == holder
    assert obj["verdict"] == "in-use", obj["reason"]
    assert f"creator pid {holder} is alive" in obj["reason"]
    box.run("systemctl stop holder.service")

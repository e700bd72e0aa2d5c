"""The hook frees a SIGKILLed service's POSIX shared memory (issue 18): Python's
multiprocessing.shared_memory makes psm_* files in /dev/shm (the container's own tmpfs);
`systemctl kill -s KILL` takes its resource tracker with it, so they leak. The hook removes
them, and keeps the live psm_* of another running unit that the same owner claims."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .conftest import HOOK_PATHS, hook_path, journal
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


@pytest.fixture(params=HOOK_PATHS)
def box(box: Container, request: pytest.FixtureRequest) -> Iterator[Container]:
    """Each test twice: the hook in-process, and offered to the hook server (issue 20)."""
    yield from hook_path(box, request.param)


# systemd's SIGKILL goes to one process after another: a resource tracker that outlives the
# main process by a moment unlinks the segments itself (seen under load, the hook then had
# nothing to remove). Unregistered, they leak as when the tracker dies first.
PSM = """\
import os, time
from multiprocessing import resource_tracker, shared_memory
segs = [shared_memory.SharedMemory(create=True, size=4096) for _ in range(2)]
for s in segs:
    resource_tracker.unregister(s._name, "shared_memory")
open(os.environ["READY"], "w").write(" ".join(s.name for s in segs))
while True:
    time.sleep(60)
"""
# one owner for both units' segments: the hook of psm-a judges psm-b's too (mapped: in-use)
POLICY = """\
[owners.psm]
unit = "psm-a.service"
kinds = ["posix-shm"]
names = ["psm_*"]
uid = "nobody"
min_age = "0s"
"""


def _start(c: Container, name: str) -> list[str]:
    c.write(
        f"/etc/systemd/system/{name}.service",
        f"[Service]\nUser=nobody\nEnvironment=READY=/tmp/{name}.ready\n"
        "ExecStart=/usr/bin/python3 /usr/local/bin/psm\n",
    )
    c.run(f"systemctl daemon-reload && systemctl start {name}.service")
    c.wait_until(f"test -s /tmp/{name}.ready")
    return c.run(f"cat /tmp/{name}.ready").stdout.split()


def shm(c: Container) -> list[str]:
    return sorted(c.run("ls -A /dev/shm").stdout.split())


def test_the_hook_removes_a_killed_services_psm_and_keeps_another_units_live_one(
    box: Container,
) -> None:
    # the container's own tmpfs, never the host's /dev/shm
    assert box.run("stat -f -c %T /dev/shm").stdout.strip() == "tmpfs"
    assert int(box.run("stat -c %d /dev/shm").stdout) != os.stat("/dev/shm").st_dev
    box.write("/usr/local/bin/psm", PSM, 0o755)
    box.write("/etc/ipcjanitor/policy.d/psm.toml", POLICY)
    # not claimed: root's psm_ file (another uid) and nobody's file of another name
    box.run(": > /dev/shm/psm_root && chmod 600 /dev/shm/psm_root")
    box.run("setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c ': > /dev/shm/other'")
    dead = _start(box, "psm-a")
    live = _start(box, "psm-b")
    box.run("ipcjanitor install-hook psm-a.service")
    assert set(dead + live) <= set(shm(box))
    box.run("systemctl kill -s KILL psm-a.service")
    box.wait_until("test $(systemctl show -p ActiveState --value psm-a.service) = failed")
    left = shm(box)
    assert not set(dead) & set(left), f"the killed service's psm_* are left: {left}"
    assert left == sorted([*live, "other", "psm_root"]), left
    # journald may not have stored the hook's records yet when the unit reads failed (load)
    box.wait_until(
        "test $(journalctl --no-pager -o cat IPCJANITOR_UNIT=psm-a.service "
        f"IPCJANITOR_VERDICT=removed | wc -l) -ge {len(dead)}",
        timeout=15,
    )
    removed = journal(box, "IPCJANITOR_UNIT=psm-a.service", "IPCJANITOR_VERDICT=removed")
    assert sorted(str(r["IPCJANITOR_NAME"]) for r in removed) == sorted(dead), removed
    for r in removed:
        assert r["IPCJANITOR_KIND"] == "posix-shm" and r["IPCJANITOR_OWNER"] == "psm"
    # psm-b still runs and still has its segments; stopped cleanly, its tracker unlinks them
    assert box.run("systemctl is-active psm-b.service").stdout.strip() == "active"
    box.run("systemctl stop psm-b.service")

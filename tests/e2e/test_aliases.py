"""Units by every name (issue 16, item 3): a policy, install-hook and the hook naming an
alias judge the unit systemd runs. The cgroup carries only the primary name: read raw, a
running service named by its alias looks stopped, and its objects were removed while it ran.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

# A service that makes its segment in a request worker (which exits) and runs on: the segment
# records only dead pids, so only "its unit is running" keeps it.
WORKER = """\
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
libc.shmat.restype = ctypes.c_void_p
key = int(sys.argv[1], 16)
if os.fork() == 0:
    libc.shmdt(ctypes.c_void_p(libc.shmat(libc.shmget(key, 4096, 0o1600), None, 0)))
    os._exit(0)
os.wait()
while True:
    time.sleep(60)
"""


def _service(box: Container, name: str, key: int, install: str = "") -> None:
    box.write(
        f"/etc/systemd/system/{name}",
        f"[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/worker 0x{key:08x}\n{install}",
    )


def _owner(box: Container, unit: str, key: int) -> None:
    box.write(
        "/etc/ipcjanitor/policy.d/alias.toml",
        f'[owners.db]\nunit = "{unit}"\nkeys = ["0x{key:08x}"]\nmin_age = "0s"\n',
    )


def _verdict(box: Container, key: int) -> dict[str, Any]:
    out = json.loads(box.run("ipcjanitor clean --json --owner db").stdout)
    found: list[dict[str, Any]] = [o for o in out["objects"] if o["key"] == f"0x{key:08x}"]
    (obj,) = found
    return obj


def test_a_running_service_named_by_its_alias_keeps_its_segment(box: Container) -> None:
    """Debian's mysql.service -> mariadb.service: Alias= in [Install], written by enable."""
    box.write("/usr/local/bin/worker", WORKER, 0o755)
    key = 0x61160301
    _service(box, "mariadb.service", key, "[Install]\nAlias=mysql.service\n")
    box.run("systemctl daemon-reload && systemctl enable mariadb.service")
    assert (
        box.run("readlink /etc/systemd/system/mysql.service")
        .stdout.strip()
        .endswith("mariadb.service")
    )
    _owner(box, "mysql.service", key)
    box.run("systemctl start mysql.service")
    box.wait_until(f"grep -q {key} /proc/sysvipc/shm")
    obj = _verdict(box, key)
    assert obj["verdict"] == "in-use", obj
    assert "mysql.service (an alias of mariadb.service) is running" in str(obj["reason"])
    assert key in sysvipc_keys(box, "shm")
    check = box.run("ipcjanitor policy check").stdout
    assert "mysql.service is an alias of mariadb.service" in check
    # and once the service is killed, it is stale and removed
    box.run("systemctl kill -s KILL mariadb.service")
    box.wait_until("! systemctl is-active -q mariadb.service")
    assert _verdict(box, key)["verdict"] == "removed"
    assert key not in sysvipc_keys(box, "shm")


def test_install_hook_on_an_alias_hooks_the_unit_systemd_runs(box: Container) -> None:
    """A plain unit-file symlink (sshd.service -> ssh.service): install-hook names the alias,
    the drop-in goes on the primary name, and the hook after a SIGKILL cleans it."""
    box.write("/usr/local/bin/worker", WORKER, 0o755)
    key = 0x61160302
    _service(box, "ssh.service", key)
    box.run("ln -s /etc/systemd/system/ssh.service /etc/systemd/system/sshd.service")
    _owner(box, "sshd.service", key)
    box.run("systemctl daemon-reload")
    out = box.run("ipcjanitor install-hook sshd").stdout
    assert "sshd.service is an alias of ssh.service" in out
    assert box.run("test -f /etc/systemd/system/ssh.service.d/ipcjanitor.conf").returncode == 0
    assert box.run("test -e /etc/systemd/system/sshd.service.d", check=False).returncode == 1
    box.run("systemctl start sshd.service")
    box.wait_until(f"grep -q {key} /proc/sysvipc/shm")
    assert _verdict(box, key)["verdict"] == "in-use"
    box.run("systemctl kill -s KILL ssh.service")
    box.wait_until("! systemctl is-active -q ssh.service")
    box.wait_until(f"! grep -q {key} /proc/sysvipc/shm")
    records = box.run("journalctl --no-pager -o json IPCJANITOR_UNIT=ssh.service").stdout
    assert "removed" in records


def test_a_template_named_by_its_alias_binds_every_instance(box: Container) -> None:
    """autovt@.service -> getty@.service: an owner on the alias template keeps a running
    instance's segment and the hook of that instance finds the owner."""
    box.write("/usr/local/bin/worker", WORKER, 0o755)
    key = 0x61160303
    box.write(
        "/etc/systemd/system/pool@.service",
        f"[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/worker 0x{key:08x}\n",
    )
    box.run("ln -s pool@.service /etc/systemd/system/tank@.service")
    _owner(box, "tank@.service", key)
    box.run("systemctl daemon-reload && systemctl start pool@1.service")
    box.wait_until(f"grep -q {key} /proc/sysvipc/shm")
    assert _verdict(box, key)["verdict"] == "in-use"
    box.run("systemctl kill -s KILL pool@1.service")
    box.wait_until("! systemctl is-active -q pool@1.service")
    hook = json.loads(box.run("ipcjanitor hook --unit=pool@1.service --json").stdout)
    assert [o["verdict"] for o in hook["objects"]] == ["removed"], hook
    assert key not in sysvipc_keys(box, "shm")

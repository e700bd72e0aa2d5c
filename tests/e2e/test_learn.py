"""`learn` under a real systemd: a PHP worker and Apache httpd, learned, written, hooked, killed."""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from typing import Any

import pytest

from .conftest import POLICY, journal, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

SCRIPT = "/usr/local/lib/php-worker/worker.php"
PHP_WORKER = """<?php
// Names its objects with ftok(__FILE__, ...), as PHP applications do.
$key = ftok(__FILE__, 'a');
$shm = shm_attach($key, 1024, 0600);
$sem = sem_get($key, 1, 0600);
sem_acquire($sem);
shm_put_var($shm, 1, getmypid());
sem_release($sem);
$request = ftok(__FILE__, 'b');
file_put_contents("/run/php-worker.ok", getmypid() . "\\n", FILE_APPEND);
while (true) {  // every 200 ms a request: a child attaches another key, works 100 ms, exits
    $pid = pcntl_fork();
    if ($pid === 0) {
        $seg = shm_attach($request, 1024, 0600);
        shm_put_var($seg, 1, getmypid());
        file_put_contents("/run/php-worker.requests", getmypid() . "\\n", FILE_APPEND);
        usleep(100000);
        exit(0);
    }
    pcntl_waitpid($pid, $status);
    usleep(200000);
}
"""


def _ipcs(c: Container, table: str) -> list[list[str]]:
    return [line.split() for line in c.run(f"cat /proc/sysvipc/{table}").stdout.splitlines()[1:]]


def _owner_objects(c: Container, owner: str) -> list[dict[str, Any]]:
    doc = json.loads(c.run(f"ipcjanitor scan --json --owner {owner}").stdout)
    return list(doc["objects"])


def _kill_and_wait_for_the_hook(c: Container, unit: str, removals: int) -> list[dict[str, object]]:
    c.run(f"systemctl kill -s KILL {unit}")
    c.wait_until(
        f"test $(journalctl --no-pager -o cat IPCJANITOR_UNIT={unit} IPCJANITOR_VERDICT=removed "
        f"| wc -l) -ge {removals}"
    )
    return journal(c, f"IPCJANITOR_UNIT={unit}")


@pytest.mark.skipif(shutil.which("php") is None, reason="needs php-cli (apt-get install php-cli)")
def test_learn_a_php_worker_then_hook_it(box: Container) -> None:
    # under /usr: the container's own overlay (its /srv is the host's, shared by every run)
    box.write(SCRIPT, PHP_WORKER)
    box.write(
        "/etc/systemd/system/php-worker.service",
        f"[Service]\nExecStart=/usr/bin/php {SCRIPT}\n",
    )
    box.run("systemctl daemon-reload && systemctl start php-worker.service")
    box.wait_until("test -s /run/php-worker.ok && test $(wc -l < /proc/sysvipc/shm) -ge 3")
    main_pid = int(box.run("systemctl show -p MainPID --value php-worker.service").stdout)

    learned = box.run("ipcjanitor learn php-worker.service --for 3s")
    proposal = tomllib.loads(learned.stdout)["owners"]
    assert proposal == {
        "php-worker": {
            "unit": "php-worker.service",
            "kinds": ["shm", "sem"],
            "ftok": [
                {"path": SCRIPT, "proj": "a"},
                {"path": SCRIPT, "proj": "b"},
            ],
            "uid": "root",
            "min_age": "0s",
        }
    }
    assert "the file is on the command line of pid" in learned.stdout
    # the per-request segment: attached by children that each lived 100 ms
    children = {int(p) for p in box.run("cat /run/php-worker.requests").stdout.split()}
    request_entry = learned.stdout.split('proj = "a" },')[1]
    attached = re.search(r"attached: pid (.*)", request_entry)
    assert attached is not None, request_entry
    assert children & {int(p) for p in re.findall(r"(\d+) \(\d+\)", attached.group(1))}
    assert re.search(rf"pid {main_pid}\b[-\d, ]*: /usr/bin/php {SCRIPT}", learned.stdout)
    assert "review it, then save it as /etc/ipcjanitor/policy.d/php-worker.toml" in learned.stderr

    # what policy check resolves is exactly the keys the worker uses
    box.write("/root/proposal.toml", learned.stdout)
    check = box.run("ipcjanitor policy check /root/proposal.toml").stdout
    assert check.rstrip().endswith("policy OK")
    keys = {f"0x{k:08x}" for k in sysvipc_keys(box, "shm") + sysvipc_keys(box, "sem")}
    assert len(keys) == 2 and all(k in check for k in keys)

    written = box.run("ipcjanitor learn php-worker.service --for 1s --write").stdout
    assert "wrote /etc/ipcjanitor/policy.d/php-worker.toml (mode 0644)" in written
    assert written.rstrip().endswith("next: ipcjanitor install-hook php-worker.service")
    assert (
        box.run("stat -c '%a %U' /etc/ipcjanitor/policy.d/php-worker.toml").stdout == "644 root\n"
    )
    before = box.run("cat /etc/ipcjanitor/policy.d/php-worker.toml").stdout
    again = box.run("ipcjanitor learn php-worker.service --for 1s --write", check=False)
    assert again.returncode == 1 and "already has an owner 'php-worker'" in again.stderr
    assert box.run("cat /etc/ipcjanitor/policy.d/php-worker.toml").stdout == before

    box.run("ipcjanitor install-hook php-worker.service")
    box.run("ipcjanitor clean")  # while the service runs, everything of its is kept
    objects = _owner_objects(box, "php-worker")
    assert sorted(o["kind"] for o in objects) == ["sem", "shm", "shm"]
    assert {o["verdict"] for o in objects} == {"in-use"}
    ids = {(o["kind"], o["id"]) for o in objects}

    records = _kill_and_wait_for_the_hook(box, "php-worker.service", 3)
    assert {(r["IPCJANITOR_KIND"], int(str(r["IPCJANITOR_ID"]))) for r in records} == ids
    assert {r["IPCJANITOR_OWNER"] for r in records} == {"php-worker"}
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []


# Modules switched by links in the container's /etc overlay: a2enmod would also write its
# state under /var/lib/apache2, which is the host's
APACHE_SETUP = [
    "cd /etc/apache2/mods-enabled && rm mpm_event.load mpm_event.conf && "
    "ln -s ../mods-available/mpm_prefork.load ../mods-available/mpm_prefork.conf "
    "../mods-available/ssl.load ../mods-available/ssl.conf "
    "../mods-available/socache_shmcb.load .",
    "mkdir -p /var/log/apache2",  # /var/log is a tmpfs in the container
    "systemctl daemon-reload",
]


@pytest.mark.skipif(
    not os.path.exists("/usr/sbin/apache2"), reason="needs apache2 (make setup-test)"
)
def test_learn_apache_sysvsem_mutexes_then_hook_them(box: Container) -> None:
    # Every mutex (mpm-accept, ssl-cache) an IPC_PRIVATE set made by root and handed to www-data
    box.write("/etc/apache2/conf-enabled/zz-ipcjanitor-test.conf", "Mutex sysvsem default\n")
    # its own network namespace: the container shares the host's, and ports 80/443 are not ours
    box.write("/etc/systemd/system/apache2.service.d/net.conf", "[Service]\nPrivateNetwork=yes\n")
    for command in APACHE_SETUP:
        box.run(command)
    box.run("systemctl start apache2.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/sem) -ge 3")  # header + 2 sets
    sets = _ipcs(box, "sem")
    assert [(s[0], s[4], s[6]) for s in sets] == [("0", "33", "0")] * 2  # key, uid, cuid

    learned = box.run("ipcjanitor learn apache2.service --for 2s --write")
    proposal = tomllib.loads(box.run("cat /etc/ipcjanitor/policy.d/apache2.toml").stdout)
    assert proposal["owners"] == {
        "apache2": {
            "unit": "apache2.service",
            "kinds": ["sem"],
            "private": True,
            "uid": "www-data",
            "cuid": "root",
            "min_age": "0s",
        }
    }
    assert "blocked in semtimedop: pid" in learned.stdout  # prefork children on the accept mutex
    assert "/usr/sbin/apache2 -k start" in learned.stdout
    assert "next: ipcjanitor install-hook apache2.service" in learned.stdout

    box.run("ipcjanitor install-hook apache2.service")
    box.run("ipcjanitor clean")
    objects = _owner_objects(box, "apache2")
    assert len(objects) == 2 and {o["verdict"] for o in objects} == {"in-use"}
    old = {int(s[1]) for s in sets}

    records = _kill_and_wait_for_the_hook(box, "apache2.service", 2)
    assert {int(str(r["IPCJANITOR_ID"])) for r in records} == old
    assert {r["IPCJANITOR_KIND"] for r in records} == {"sem"}
    # Debian's Restart=on-abort starts it again after the SIGKILL: with fresh sets only
    assert not old & {int(s[1]) for s in _ipcs(box, "sem")}
    box.run("systemctl stop apache2.service")


QUEUE_READERS = """\
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
# three queues of a run of keys, and one of a key the box's `orphans` owner claims
queues = [libc.msgget(key, 0o1600) for key in (0x71000001, 0x71000002, 0x71000003, 0x70000005)]
assert min(queues) >= 0
for q in queues:
    if os.fork() == 0:  # a reader per queue, asleep in msgrcv: no pid is recorded until a send
        buf = ctypes.create_string_buffer(64)
        libc.msgrcv(q, buf, 56, 0, 0)
        os._exit(0)
print("ready", flush=True)
while True:
    time.sleep(60)
"""


def test_learn_sees_queues_only_by_their_blocked_readers(box: Container) -> None:
    box.write("/usr/local/bin/readers", QUEUE_READERS, 0o755)
    box.write("/etc/systemd/system/readers.service",
              "[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/readers\n")  # fmt: skip
    box.write("/etc/systemd/system/idle.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    box.run("systemctl daemon-reload && systemctl start readers.service idle.service")
    box.wait_until("test $(grep -c . /proc/sysvipc/msg) -ge 5")
    box.wait_until("test $(grep -lw do_msgrcv /proc/*/wchan 2>/dev/null | wc -l) -ge 4")

    learned = box.run("ipcjanitor learn readers.service --for 1s")
    owner = tomllib.loads(learned.stdout)["owners"]["readers"]
    assert owner["keys"] == ["0x71000001-0x71000003"] and owner["kinds"] == ["msg"]
    assert learned.stdout.count("blocked in msgrcv: pid") == 3
    assert "3 of the 3 keys of this range were seen" in learned.stdout
    line = POLICY.splitlines().index("[owners.orphans]") + 1
    claimed = (
        f"owner 'orphans' (/etc/ipcjanitor/policy.d/test.toml:{line}) already claims it for msg"
    )
    assert "# NOT CLAIMED: key 0x70000005" in learned.stdout and claimed in learned.stdout
    assert claimed in learned.stderr
    progress = "learning readers.service: 0/1 s, 5 processes, 4 objects seen"
    assert "learning" not in learned.stderr  # no progress line but on a terminal:
    tty = box.run("script -qec 'ipcjanitor learn readers.service --for 1s' /dev/null")
    assert progress in tty.stdout

    box.run(
        "ipcjanitor learn readers.service --for 0 --write && ipcjanitor install-hook readers.service"
    )
    records = _kill_and_wait_for_the_hook(box, "readers.service", 3)
    assert sorted(str(r["IPCJANITOR_KEY"]) for r in records) == [
        "0x71000001", "0x71000002", "0x71000003",
    ]  # fmt: skip
    assert [int(q[0]) & 0xFFFFFFFF for q in _ipcs(box, "msg")] == [0x70000005]  # not its own

    nothing = box.run("ipcjanitor learn idle.service --for 1s", check=False)
    assert nothing.returncode == 1 and "used no System V or POSIX IPC object" in nothing.stderr
    stopped = box.run("ipcjanitor learn readers.service --for 1s", check=False)
    assert stopped.returncode == 1 and "readers.service has no processes" in stopped.stderr

"""Template units under a real systemd: each instance's own objects go when it is killed,
while the other instance runs; objects shared by the instances stay until none runs."""

from __future__ import annotations

import json

import pytest

from .conftest import journal, sysvipc_keys
from .container import ROOT, Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

EXAMPLE = ROOT / "packaging" / "examples" / "worker-template.toml"
SHARED = 0x57000001  # the example's shared key
WORKER = """\
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ftok.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.shmat.restype = ctypes.c_void_p
instance = sys.argv[1]
key = libc.ftok(f"/srv/worker/{instance}/queue".encode(), ord("q")) & 0xFFFFFFFF
child = os.fork()
if child == 0:  # the instance's own segment, made and left by a short-lived child
    shm = libc.shmget(ctypes.c_int32(key).value, 4096, 0o1600)
    addr = libc.shmat(shm, None, 0)
    assert shm >= 0 and addr not in (None, ctypes.c_void_p(-1).value)
    libc.shmdt(ctypes.c_void_p(addr))
    os._exit(0)
assert os.waitpid(child, 0)[1] == 0
sem = libc.semget(SHARED_KEY, 1, 0o1600)  # one set every instance uses
op = (ctypes.c_short * 3)(0, 1, 0)
assert sem >= 0 and libc.semop(sem, op, 1) == 0
with open(f"/run/worker-{instance}/key", "w") as f:
    f.write(f"{key}\\n")
while True:
    time.sleep(60)
""".replace("SHARED_KEY", str(SHARED))


def _objects(c: Container) -> dict[tuple[str, int], tuple[str, str, str]]:
    doc = json.loads(c.run("ipcjanitor scan --json --owner workers").stdout)
    return {
        (o["kind"], int(o["key"], 16)): (o["owner"], o["verdict"], o["reason"])
        for o in doc["objects"]
    }


@pytest.mark.parametrize("complete", [True, False], ids=["pidns-complete", "cgroup-only"])
def test_a_killed_instance_loses_its_own_objects_while_the_other_runs(
    box: Container, complete: bool
) -> None:
    if not complete:  # the container's pid namespace is not the host's: the cgroups decide
        box.run("sed -i /pid_namespace_complete/d /etc/ipcjanitor/policy.d/test.toml")
    assert f'keys = ["0x{SHARED:08x}"]' in EXAMPLE.read_text()
    box.run("useradd --system --no-create-home worker")  # in the container's /etc overlay
    box.write("/usr/local/bin/worker", WORKER, 0o755)
    box.write(
        "/etc/systemd/system/worker@.service",
        "[Service]\nUser=worker\nExecStart=/usr/bin/python3 /usr/local/bin/worker %i\n"
        "RuntimeDirectory=worker-%i\n",
    )
    # root's spool directory, each instance's own below it (/srv is the container's tmpfs)
    box.run("install -d -m 0755 /srv/worker")
    for i in (1, 2):
        box.run(f"install -d -o worker /srv/worker/{i} && install -o worker /dev/null "
                f"/srv/worker/{i}/queue")  # fmt: skip
    assert box.run("stat -c '%U %a' /srv/worker").stdout == "root 755\n"
    box.write("/etc/ipcjanitor/policy.d/worker.toml", EXAMPLE.read_text())
    check = box.run("ipcjanitor policy check").stdout
    assert "  per instance: ftok /srv/worker/%i/queue proj 'q' -> workers@1, workers@2" in check
    assert "[workers@2]  (instance 2 of workers, " in check
    assert "  unit:  worker@2.service" in check
    installed = box.run("ipcjanitor install-hook worker@.service").stdout
    assert installed.startswith("wrote /etc/systemd/system/worker@.service.d/ipcjanitor.conf")

    box.run("systemctl daemon-reload && systemctl start worker@1.service")
    box.wait_until("test -s /run/worker-1/key")
    box.run("systemctl start worker@2.service")  # the last to operate on the shared set
    box.wait_until("test -s /run/worker-2/key")
    one, two = (int(box.run(f"cat /run/worker-{i}/key").stdout) for i in (1, 2))
    assert sorted(sysvipc_keys(box, "shm")) == sorted([one, two])
    assert sysvipc_keys(box, "sem") == [SHARED]

    # both run: `clean` keeps everything, each object by the unit that may come back for it
    box.run("ipcjanitor clean")
    running = "is running: it may attach by key again at any moment"
    assert _objects(box) == {
        ("shm", one): ("workers@1", "in-use", f"worker@1.service {running}"),
        ("shm", two): ("workers@2", "in-use", f"worker@2.service {running}"),
        ("sem", SHARED): ("workers", "in-use", f"worker@.service {running}"),
    }

    # SIGKILL worker@2 only: its hook frees its segment; worker@1's, and the shared set whose
    # last operator was worker@2, stay while worker@1 runs
    main_pid = box.run("systemctl show -p MainPID --value worker@2.service").stdout.strip()
    box.run("systemctl kill -s KILL worker@2.service")
    box.wait_until("test $(systemctl show -p ActiveState --value worker@2.service) = failed")
    assert sysvipc_keys(box, "shm") == [one] and sysvipc_keys(box, "sem") == [SHARED]
    (record,) = journal(box, "IPCJANITOR_UNIT=worker@2.service")
    assert (record["IPCJANITOR_VERDICT"], record["IPCJANITOR_OWNER"]) == ("removed", "workers@2")
    assert (record["IPCJANITOR_KIND"], record["IPCJANITOR_KEY"]) == ("shm", f"0x{two:08x}")
    assert "exited" in str(record["IPCJANITOR_REASON"])
    doc = json.loads(box.run("ipcjanitor scan --json --owner workers").stdout)
    left = {o["owner"]: o for o in doc["objects"]}
    assert {name: o["verdict"] for name, o in left.items()} == {
        "workers@1": "in-use", "workers": "in-use",
    }  # fmt: skip
    # the shared set's only recorded pid is worker@2's, dead: worker@1 running keeps it
    assert left["workers"]["pids"] == [int(main_pid)]
    assert left["workers"]["reason"] == f"worker@.service {running}"

    # the last instance stops: its own segment and the shared set go with it
    box.run("systemctl stop worker@1.service")
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    records = journal(box, "IPCJANITOR_UNIT=worker@1.service")
    assert sorted((r["IPCJANITOR_OWNER"], r["IPCJANITOR_KEY"]) for r in records) == [
        ("workers", f"0x{SHARED:08x}"),
        ("workers@1", f"0x{one:08x}"),
    ]

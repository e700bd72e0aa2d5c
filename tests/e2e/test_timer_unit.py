"""The shipped ipcjanitor.service sees what `scan` by hand sees: ftok paths and processes.

Its sandbox must not change what it resolves (an ftok key is the file's st_dev and st_ino:
a read-only view of the same mount keeps it, a fresh tmpfs does not) nor whom it can see
(/proc with hidepid).
"""

from __future__ import annotations

import json

import pytest

from .conftest import journal, sysvipc_keys
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

# where PHP apps keep the file they ftok(): a 0700 home (Debian 12's adduser default), /tmp,
# /var/tmp and /dev/shm
FTOK_PATHS = {
    "/home/deploy/app/artisan": "a",
    "/tmp/app/artisan": "b",
    "/var/tmp/app/artisan": "c",
    "/dev/shm/app/artisan": "d",
}
DIE_HOLDING = (
    "import ctypes, os, sys; libc = ctypes.CDLL(None); libc.shmat.restype = ctypes.c_void_p;"
    " key = libc.ftok(sys.argv[1].encode(), ord(sys.argv[2]));"
    " libc.shmat(libc.shmget(key, 4096, 0o1600), None, 0); print(key & 0xFFFFFFFF, flush=True);"
    " os.kill(os.getpid(), 9)"
)


def test_the_service_resolves_ftok_paths_under_home_and_tmp(box: Container) -> None:
    box.run("useradd -m -K HOME_MODE=0700 -u 4300 deploy")  # /home is the container's tmpfs
    assert box.run("stat -c %a /home/deploy").stdout.strip() == "700"
    policy = ""
    keys = {}
    for path, proj in FTOK_PATHS.items():
        box.run(f"mkdir -p $(dirname {path}) && touch {path} && chown -R deploy: $(dirname {path})")
        out = box.run(f"setpriv --reuid=deploy --regid=deploy --init-groups "
                      f"/usr/bin/python3 -c '{DIE_HOLDING}' {path} {proj}", check=False)  # fmt: skip
        keys[path] = int(out.stdout)
        name = path.split("/")[1]
        # deploy controls these paths (and could point them anywhere): as root, the key is
        # claimed only for deploy's own objects
        policy += (
            f'[owners.{name}]\nftok = [{{ path = "{path}", proj = "{proj}" }}]\n'
            'uid = "deploy"\nmin_age = "0s"\n'
        )
    box.write("/etc/ipcjanitor/policy.d/ftok.toml", policy)
    assert sorted(sysvipc_keys(box, "shm")) == sorted(keys.values())
    by_hand = json.loads(box.run("ipcjanitor scan --json").stdout)
    assert {o["key"]: o["verdict"] for o in by_hand["objects"]} == {
        f"0x{k:08x}": "stale" for k in keys.values()
    }

    box.run("systemctl start ipcjanitor.service")

    assert sysvipc_keys(box, "shm") == []
    removed = journal(box, "_SYSTEMD_UNIT=ipcjanitor.service", "IPCJANITOR_VERDICT=removed")
    assert {str(r["IPCJANITOR_KEY"]) for r in removed} == {f"0x{k:08x}" for k in keys.values()}
    warnings = journal(box, "_SYSTEMD_UNIT=ipcjanitor.service", "-p", "warning")
    # these unit-less owners at min_age 0s: one handoff-gap record each for the run, and
    # no other warning (the unit must not skip an ftok entry)
    gaps = [w for w in warnings if w.get("IPCJANITOR_EVENT") == "handoff-gap"]
    gap_owners = [str(w["MESSAGE"]).split()[1] for w in gaps]
    assert {p.split("/")[1] for p in FTOK_PATHS} <= set(gap_owners)
    assert len(gap_owners) == len(set(gap_owners)), "one record per owner and run"
    assert not [w["MESSAGE"] for w in warnings if w not in gaps], "an ftok entry was skipped"


HOLDER = (
    "import ctypes, sys, time; libc = ctypes.CDLL(None);"
    " assert libc.shmget(int(sys.argv[1], 0), 4096, 0o1600) >= 0;"
    " print('ready', flush=True); time.sleep(600)"
)
HIDEPID_POLICY = """\
[owners.gone]
unit = "gone.service"
keys = ["0x70100001"]
min_age = "0s"

[owners.live]
unit = "live.service"
keys = ["0x70100002"]
min_age = "0s"
"""


@pytest.mark.parametrize("options", ["hidepid=invisible", "hidepid=invisible,gid=4299"])
def test_the_service_sees_through_hidepid(box: Container, options: str) -> None:
    """A dead unit-bound object goes, a live one (another user's unit) stays `in-use`.

    On systemd >= 247 with Linux >= 5.8 the unit gets a private /proc without hidepid
    (ProtectKernelTunables= implies MountAPIVFS=), so this holds even without CAP_SYS_PTRACE;
    it guards the unit's view (a ProtectProc=, a lost capability) against regressions.
    """
    box.run(f"mount -o remount,{options} /proc")  # the container's own procfs
    box.write("/etc/ipcjanitor/policy.d/units.toml", HIDEPID_POLICY)
    for unit, user, key in (("gone", 4301, "0x70100001"), ("live", 4302, "0x70100002")):
        box.run(f"useradd -M -u {user} {unit}")
        box.run(f"systemd-run --uid={unit} --unit={unit}.service "
                f"/usr/bin/python3 -c \"{HOLDER}\" {key}")  # fmt: skip
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 3")
    box.run("systemctl stop gone.service")  # its object stays behind: a dead unit-bound owner
    assert sorted(sysvipc_keys(box, "shm")) == [0x70100001, 0x70100002]
    # nobody but root sees the live unit's processes now
    hidden = box.run("setpriv --reuid=4300 --regid=4300 --clear-groups ls /proc").stdout.split()
    live_pid = box.run("systemctl show -p MainPID --value live.service").stdout.strip()
    assert live_pid not in hidden

    box.run("systemctl start ipcjanitor.service")

    assert sysvipc_keys(box, "shm") == [0x70100002]  # live.service runs as another user: kept
    (record,) = journal(box, "_SYSTEMD_UNIT=ipcjanitor.service", "IPCJANITOR_VERDICT=removed")
    assert record["IPCJANITOR_KEY"] == "0x70100001" and record["IPCJANITOR_OWNER"] == "gone"
    assert (
        box.run("systemctl show -p Result --value ipcjanitor.service").stdout.strip() == "success"
    )
    # it saw live.service run (in-use), it did not merely fail to see (unknown)
    summary = box.run("journalctl --no-pager -o cat -u ipcjanitor.service").stdout
    assert "2 objects: 1 in-use, 1 removed" in summary, summary
    box.run("systemctl stop live.service")


QUEUE_USER = (  # send and receive once (so msg_lspid and msg_lrpid record it), then die
    "import ctypes, os, struct, sys; libc = ctypes.CDLL(None);"
    " q = libc.msgget(int(sys.argv[1], 0), 0o1666);"
    " m = ctypes.create_string_buffer(struct.pack('l', 1) + b'x', 64);"
    " assert libc.msgsnd(q, m, 1, 0) == 0 and libc.msgrcv(q, m, 32, 0, 0) == 1;"
    " os.kill(os.getpid(), 9)"
)
WAITER = (
    "import ctypes, sys; libc = ctypes.CDLL(None); q = libc.msgget(int(sys.argv[1], 0), 0);"
    " buf = ctypes.create_string_buffer(64); print('waiting', flush=True);"
    " libc.msgrcv(q, buf, 32, 0, 0)"
)
QUEUE_POLICY = """\
[owners.queues]
keys = ["0x70100003-0x70100004"]
min_age = "0s"
"""


def test_the_service_reads_other_users_tasks_to_judge_queues(box: Container) -> None:
    """A task blocked in msgrcv is a queue's only sign of life (the kernel counts no queue
    waiters); reading another user's /proc/PID/task/TID/syscall needs CAP_SYS_PTRACE, and a
    run that cannot read every task never calls a queue stale.
    """
    box.write("/etc/ipcjanitor/policy.d/queues.toml", QUEUE_POLICY)
    box.run("useradd -M -u 4303 waiter && useradd -M -u 4304 sender")
    for key in ("0x70100003", "0x70100004"):  # both: last sender and receiver dead
        box.run(f'setpriv --reuid=sender --regid=sender --clear-groups /usr/bin/python3 -c "{QUEUE_USER}" {key}', check=False)  # fmt: skip
    assert sorted(sysvipc_keys(box, "msg")) == [0x70100003, 0x70100004]
    # another user's live task blocked in msgrcv on the first: it is in use
    box.run(f'systemd-run --uid=waiter --unit=waiter.service /usr/bin/python3 -c "{WAITER}" 0x70100003')  # fmt: skip
    box.wait_until("journalctl --no-pager -u waiter.service | grep -q waiting")
    pid = box.run("systemctl show -p MainPID --value waiter.service").stdout.strip()
    box.wait_until(f"test $(cut -d' ' -f3 /proc/{pid}/stat) = S")

    box.run("systemctl start ipcjanitor.service")

    assert sysvipc_keys(box, "msg") == [0x70100003]
    (record,) = journal(box, "_SYSTEMD_UNIT=ipcjanitor.service", "IPCJANITOR_VERDICT=removed")
    assert record["IPCJANITOR_KEY"] == "0x70100004" and record["IPCJANITOR_KIND"] == "msg"
    summary = box.run("journalctl --no-pager -o cat -u ipcjanitor.service").stdout
    assert "2 objects: 1 in-use, 1 removed" in summary, summary
    box.run("systemctl stop waiter.service")


# uid 4400 opens its /dev/shm file, sends the fd into a unix socket it keeps (an fd in flight)
# and closes it: no /proc/PID/maps or fd names the file, yet it is open. Only the kernel's
# write lease sees that; without CAP_LEASE root gets none on another user's file (EACCES) and
# the re-read alone would remove it.
IN_FLIGHT = (
    "import os, socket, time; fd = os.open('/dev/shm/lease_held', os.O_CREAT | os.O_RDWR, 0o600);"
    " a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM);"
    " socket.send_fds(a, [b'x'], [fd]); os.close(fd); time.sleep(600)"
)
LEASE_POLICY = '[owners.leases]\nnames = ["lease_*"]\nuid = 4400\nmin_age = "0s"\n'


def test_the_service_takes_a_lease_on_another_users_file(box: Container) -> None:
    box.run("useradd -M -u 4400 leaser")  # in the container's /etc overlay
    box.write("/etc/ipcjanitor/policy.d/leases.toml", LEASE_POLICY)
    box.run(f'systemd-run --uid=leaser --unit=inflight.service /usr/bin/python3 -c "{IN_FLIGHT}"')
    box.run("setpriv --reuid=4400 --regid=4400 --clear-groups sh -c ': > /dev/shm/lease_dead'")
    box.wait_until(
        "ls -l /proc/$(systemctl show -p MainPID --value inflight.service)/fd | grep -q socket"
    )
    seen = json.loads(box.run("ipcjanitor scan --json --kind posix-shm").stdout)["objects"]
    # what the maps and fds say: nobody holds either
    assert {o["name"]: o["verdict"] for o in seen} == {"lease_held": "stale", "lease_dead": "stale"}
    box.run("systemctl start ipcjanitor.service")
    left = box.run("ls /dev/shm").stdout.split()
    assert "lease_dead" not in left, left  # another user's file, removed by the unit
    assert "lease_held" in left, "the unit took no lease: the file open in flight was removed"
    (kept,) = journal(box, "_SYSTEMD_UNIT=ipcjanitor.service", "IPCJANITOR_NAME=lease_held")
    assert kept["IPCJANITOR_VERDICT"] == "changed" and "write lease" in str(
        kept["IPCJANITOR_REASON"]
    )
    box.run("systemctl stop inflight.service")

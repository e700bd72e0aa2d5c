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


REQUEST_WORKER_SERVICE = """\
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
libc.shmat.restype = ctypes.c_void_p
key = int(sys.argv[1], 16)
if os.fork() == 0:  # a request worker: create, attach, detach, exit
    libc.shmdt(ctypes.c_void_p(libc.shmat(libc.shmget(key, 4096, 0o1600), None, 0)))
    os._exit(0)
os.wait()
while True:  # the service runs on and will attach by key on its next request
    time.sleep(60)
"""
# systemd escapes these units' cgroup directories (cg_escape): _memory.service, _io.service,
# __billing.service; a plain name is the control
ESCAPED_UNITS = {
    "plain.service": 0x61060001,
    "memory.service": 0x61060002,
    "io.service": 0x61060003,
    "_billing.service": 0x61060004,
}


def test_a_running_unit_with_an_escaped_cgroup_name_keeps_its_objects(box: Container) -> None:
    """Found by attacking the engine: a running unit whose cgroup directory systemd escapes
    looked stopped, and its objects were removed while it ran (its worker had exited)."""
    box.write("/usr/local/bin/request-worker", REQUEST_WORKER_SERVICE, 0o755)
    policy = []
    for i, (unit, key) in enumerate(ESCAPED_UNITS.items()):
        policy.append(f'[owners.o{i}]\nunit = "{unit}"\nkeys = ["0x{key:08x}"]\nmin_age = "0s"\n')
        box.write(
            f"/etc/systemd/system/{unit}",
            f"[Service]\nExecStart=/usr/bin/python3 /usr/local/bin/request-worker 0x{key:08x}\n",
        )
    box.write("/etc/ipcjanitor/policy.d/escaped.toml", "".join(policy))
    box.run("systemctl daemon-reload")
    for unit in ESCAPED_UNITS:
        box.run(f"systemctl start {unit}")
    box.wait_until(f"test $(wc -l < /proc/sysvipc/shm) -ge {len(ESCAPED_UNITS) + 1}")
    cgroups = box.run("cat /proc/*/cgroup 2>/dev/null | grep -o '/_[^/]*service' | sort -u")
    assert "/_memory.service" in cgroups.stdout  # systemd did escape it
    out = json.loads(box.run("ipcjanitor clean --json").stdout)
    by_key = {o["key"]: o for o in out["objects"]}
    for unit, key in ESCAPED_UNITS.items():
        o = by_key[f"0x{key:08x}"]
        assert o["verdict"] == "in-use" and f"{unit} is running" in o["reason"], (unit, o)
    for unit in ESCAPED_UNITS:
        box.run(f"systemctl kill -s KILL {unit}")
    box.wait_until("! systemctl is-active -q memory.service")
    out = json.loads(box.run("ipcjanitor clean --json").stdout)
    removed = {o["key"] for o in out["objects"] if o["verdict"] == "removed"}
    assert removed == {f"0x{key:08x}" for key in ESCAPED_UNITS.values()}


def test_doctor_tells_an_installed_hook_from_an_unsafe_old_one(box: Container) -> None:
    box.run("ipcjanitor install-hook leaky.service")
    doc = json.loads(box.run("ipcjanitor doctor --json", check=False).stdout)
    assert [h for h in doc["hooks_missing"] if h["unit"] == "leaky.service"] == []
    # what install-hook wrote before the trampoline: the hook with the service's environment
    box.write(
        "/etc/systemd/system/leaky.service.d/ipcjanitor.conf",
        "[Service]\nExecStopPost=-+/usr/bin/ipcjanitor hook --unit=%n\n",
    )
    out = box.run("ipcjanitor doctor", check=False)
    assert out.returncode == 1 and "UNSAFE HOOK: owner leaky: leaky.service" in out.stdout

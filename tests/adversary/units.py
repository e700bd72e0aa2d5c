"""The attacker's unit variant: real units under a contained systemd (tests/e2e/container.py).

Three hooked units, adv-app1..3.service (`ipcjanitor install-hook`: the installed hook is
their ExecStopPost=), run unitapp.py, which makes and holds System V and POSIX objects of
the owner bound to its unit; transient holder units (systemd-run) attach, map or open an
app's attachable objects and outlive its stop. A seeded schedule starts, stops and SIGKILLs
(`systemctl kill -s KILL`) apps and holders, and runs `clean`, `scan` and `hook
--unit=adv-appN.service` at random points. After every step: no live process lost an object
it held (unitapp.py's lost.log: EIDRM/EINVAL, or its key or name gone), no janitor run
removed or called stale what a running unit holds, nothing unclaimed was removed; at the
end, every unit stopped, one clean leaves nothing claimed.

`python -m tests.adversary.units --seeds 1-2 --steps 40` runs schedules from the shell (as
root, on a host where container.available() is None); `--minutes N` draws new seeds (make
soak). Each schedule boots its own systemd.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from tests.adversary import unitapp
from tests.e2e.container import ROOT, Container

APPS = 3
MAX_HOLDERS = 3
DIR = "/run/adv"
VENV_BIN = ROOT / ".venv" / "bin"
APP = "/usr/local/bin/adv-unitapp"
CLOCK_UNITS = ("ipcjanitor-clock.service", "ipcjanitor-clock.timer")
SERVER_UNITS = ("ipcjanitor-hook.socket", "ipcjanitor-hook.service")
GLOBAL = 'pid_namespace_complete = true\nmin_age = "0s"\n'
# a holder's transient unit, no owner's: Type=exec, so the command has started when it returns
HOLDER_RUN = "systemd-run --no-block --quiet --property=Type=exec --unit={unit} "


def policy() -> str:
    out = []
    for n in range(1, APPS + 1):
        k = unitapp.keys(n)
        out.append(f'[owners.adv-app{n}]\nunit = "adv-app{n}.service"\n'
                   f'keys = ["0x{k["shm"]:08x}-0x{k["msg"]:08x}"]\nnames = ["unit{n}-*"]\n'
                   'keep_queued_messages = false\n')  # fmt: skip
    return "\n".join(out)


class Run:
    """One schedule's world: which units run, what each of their processes holds."""

    def __init__(self, box: Container, seed: int) -> None:
        self.box, self.rng = box, random.Random(seed)
        self.seed = seed
        self.apps: dict[int, str | None] = dict.fromkeys(range(1, APPS + 1))  # n -> state
        self.holders: dict[str, int] = {}  # running holder unit -> app n
        self.held: dict[str, list[str]] = {}  # running unit -> kinds its process holds
        self.made = 0
        self.started: set[int] = set()  # apps that ran: each made an unclaimed segment
        self.steps: list[dict[str, Any]] = []
        self.violations: list[dict[str, Any]] = []
        self.stats: dict[str, int] = {}

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def violation(self, what: str, **detail: Any) -> None:
        self.violations.append({"step": len(self.steps), "what": what, **detail})

    # the units ---------------------------------------------------------------------------
    def _ready(self, role: str, n: int, pid: int) -> list[str]:
        f = f"{DIR}/{role}-{n}-{pid}.ready"
        self.box.wait_until(f"test -e {f}", timeout=30)
        return list(json.loads(self.box.run(f"cat {f}").stdout)["held"])

    def _main_pid(self, unit: str) -> int:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pid = int(self.box.run(f"systemctl show -p MainPID --value {unit}").stdout or 0)
            if pid:
                return pid
            time.sleep(0.05)
        raise TimeoutError(f"{unit} has no main pid")

    def start_app(self, n: int) -> None:
        unit = f"adv-app{n}.service"
        self.box.run(f"systemctl start {unit}")
        self.held[unit] = self._ready("app", n, self._main_pid(unit))
        self.apps[n] = "running"
        self.started.add(n)

    def start_holder(self, n: int) -> None:
        self.made += 1
        unit = f"adv-hold{n}-{self.made}.service"
        self.box.run(HOLDER_RUN.format(unit=unit) + f"/usr/bin/python3 {APP} holder {n} {DIR}")
        self.held[unit] = self._ready("holder", n, self._main_pid(unit))
        self.holders[unit] = n
        self.count(
            "holder held " + ",".join(self.held[unit]) if self.held[unit] else "holder held nothing"
        )

    def stop(self, unit: str, how: str) -> None:
        """systemctl stop (waits for ExecStopPost=, the hook), or SIGKILL and wait for it."""
        if how == "stop":
            self.box.run(f"systemctl stop {unit}")
        else:
            self.box.run(f"systemctl kill -s KILL {unit}")
            self.box.wait_until(f"! systemctl is-active -q {unit} && "
                                f"test $(systemctl show -p ActiveState --value {unit}) != deactivating")  # fmt: skip
        self.held.pop(unit, None)
        self.holders.pop(unit, None)
        if unit.startswith("adv-app"):
            self.apps[int(unit[7:].split(".", maxsplit=1)[0])] = None
            self.hooked(unit)
        self.count(f"{how} {'app' if unit.startswith('adv-app') else 'holder'}")

    def hooked(self, unit: str) -> None:
        """What the unit's ExecStopPost= hook removed, from its journal records, judged as a
        run's JSON is (the hook ran inside systemctl stop, or before the kill's unit ended)."""
        self.box.run("journalctl --sync")
        # sent from the unit's cgroup (in-process), or by the hook server for its launcher
        out = self.box.run(f"journalctl --no-pager -o json --cursor-file={DIR}/cursor "
                           f"IPCJANITOR_UNIT={unit} _SYSTEMD_UNIT={unit} + "
                           f"IPCJANITOR_UNIT={unit} _SYSTEMD_UNIT=ipcjanitor-hook.service "
                           f"OBJECT_SYSTEMD_UNIT={unit}").stdout  # fmt: skip
        for line in out.splitlines():
            rec = json.loads(line)
            entry = {"kind": rec.get("IPCJANITOR_KIND", ""), "key": rec.get("IPCJANITOR_KEY", "0"),
                     "name": rec.get("IPCJANITOR_NAME", ""),
                     "verdict": rec.get("IPCJANITOR_VERDICT", "")}  # fmt: skip
            if entry["verdict"]:
                self._judge(entry, f"ExecStopPost= of {unit}")

    # the janitor --------------------------------------------------------------------------
    def janitor(self, command: str) -> None:
        out = self.box.run(f"ipcjanitor {command} --json", check=False)
        self.count(command.split(maxsplit=1)[0])
        try:
            doc = json.loads(out.stdout)
        except ValueError:
            self.violation("the janitor gave no JSON", command=command, rc=out.returncode,
                           stderr=out.stderr[-800:])  # fmt: skip
            return
        if out.returncode != 0:
            self.violation("the janitor failed", command=command, rc=out.returncode,
                           stderr=out.stderr[-800:])  # fmt: skip
        for entry in doc["objects"]:
            self._judge(entry, command)

    def _judge(self, entry: dict[str, Any], command: str) -> None:
        n, kind = owner_of(entry)
        if n is None:
            if entry["verdict"] == "removed":
                self.violation("removed an object no owner claims", entry=entry, command=command)
            return
        holders = [u for u, kinds in self.held.items()
                   if kind in kinds and (self.holders.get(u) == n or u == f"adv-app{n}.service")]  # fmt: skip
        self.count(f"{command.split(maxsplit=1)[0]}: {entry['verdict']}")
        if entry["verdict"] in ("removed", "stale") and holders:
            self.violation(f"{entry['verdict']} while held", entry=entry, holders=holders,
                           command=command)  # fmt: skip
        if entry["verdict"] in ("removed", "stale") and self.apps[n] == "running":
            self.violation(f"{entry['verdict']} while its unit runs", entry=entry, command=command)

    def check_lost(self) -> None:
        text = self.box.run(f"cat {DIR}/lost.log 2>/dev/null; rm -f {DIR}/lost.log").stdout
        for line in text.splitlines():
            self.violation("a live process lost an object it held", lost=json.loads(line))

    # the schedule -------------------------------------------------------------------------
    def step(self) -> None:
        rng = self.rng
        choices: list[tuple[float, dict[str, Any]]] = []
        for n, state in self.apps.items():
            unit = f"adv-app{n}.service"
            if state is None:
                choices.append((4, {"op": "start", "n": n}))
            else:
                choices += [(2, {"op": "stop", "unit": unit}), (2, {"op": "kill", "unit": unit}),
                            (1, {"op": "hook", "n": n})]  # fmt: skip
            if len(self.holders) < MAX_HOLDERS:
                choices.append((1.5, {"op": "holder", "n": n}))
        for unit in self.holders:
            choices.append((1, {"op": rng.choice(("stop", "kill")), "unit": unit}))
        choices += [(3, {"op": "clean"}), (1, {"op": "scan"}),
                    (1.5, {"op": "hook", "n": rng.randrange(1, APPS + 1)})]  # fmt: skip
        pick = rng.uniform(0, sum(w for w, _ in choices))
        chosen = choices[-1][1]
        for weight, s in choices:
            pick -= weight
            if pick <= 0:
                chosen = s
                break
        self.do(chosen)

    def do(self, s: dict[str, Any]) -> None:
        self.steps.append(s)
        op = s["op"]
        if op == "start":
            self.start_app(s["n"])
        elif op == "holder":
            self.start_holder(s["n"])
        elif op in ("stop", "kill"):
            self.stop(s["unit"], op)
        elif op == "hook":
            self.janitor(f"hook --unit=adv-app{s['n']}.service")
        else:
            self.janitor(op)
        self.check_lost()

    def finish(self) -> list[str]:
        """Every unit stopped (its hook runs), then one clean: nothing claimed may be left,
        the unclaimed segments every app made must be."""
        for unit in [*self.holders, *(f"adv-app{n}.service" for n, s in self.apps.items() if s)]:
            self.stop(unit, "stop")
        self.janitor("clean")
        self.check_lost()
        left = leftovers(self.box)
        for what in left:
            self.violation("dead and claimed, left at the end", object=what)
        there = unclaimed_keys(self.box)
        for n in self.started:
            if unitapp.FREE + n not in there:
                self.violation("an unclaimed segment was removed", key=hex(unitapp.FREE + n))
        return left


def owner_of(entry: dict[str, Any]) -> tuple[int | None, str]:
    """App n whose owner claims the entry, and its kind; None: no adversary owner does."""
    kind = entry["kind"]
    for n in range(1, APPS + 1):
        k, names = unitapp.keys(n), unitapp.names(n)
        if kind in k and int(str(entry.get("key", "0")), 16) == k[kind]:
            return n, kind
        if kind in names and entry.get("name", "").lstrip("/").removeprefix("sem.") == names[kind]:
            return n, kind
    return None, kind


def leftovers(box: Container) -> list[str]:
    out = []
    for table in ("shm", "sem", "msg"):
        for line in box.run(f"cat /proc/sysvipc/{table}").stdout.splitlines()[1:]:
            key = int(line.split()[0]) & 0xFFFFFFFF
            if unitapp.BASE <= key < unitapp.BASE + 16 * (APPS + 1):
                out.append(f"{table} key 0x{key:08x}")
    listed = box.run("ls /dev/shm /dev/mqueue").stdout.split()
    return out + [name for name in listed if name.startswith(("unit", "sem.unit"))]


def unclaimed_keys(box: Container) -> set[int]:
    lines = box.run("cat /proc/sysvipc/shm").stdout.splitlines()[1:]
    return {int(line.split()[0]) & 0xFFFFFFFF for line in lines}


# ipcjanitor with a defect patched in (broken.py), put in the installed one's place
BROKEN = """\
#!{python}
import os, sys
sys.path.insert(0, {root!r})
os.environ["ADVERSARY_HOST_SHM_DEV"] = {dev!r}
sys.argv[1:1] = [{brk!r}]
from tests.adversary.broken import main
sys.exit(main())
"""


def boot(brk: str | None = None, served: bool = False) -> Container:
    """A contained systemd with the apps' units hooked; brk: with a broken janitor; served:
    the hooks offered to the hook server (its socket enabled, as the packages do)."""
    box = Container()
    box.start()
    box.run(f"ln -s {VENV_BIN / 'ipcjanitor'} /usr/bin/ipcjanitor")
    box.write("/etc/ipcjanitor/policy.d/adversary.toml", GLOBAL + "\n" + policy())
    box.write(APP, Path(unitapp.__file__).read_text(), 0o755)
    box.run(f"mkdir -p {DIR}")
    for unit in (*CLOCK_UNITS, *SERVER_UNITS):
        box.write(f"/etc/systemd/system/{unit}", (ROOT / "units" / unit).read_text())
    for n in range(1, APPS + 1):
        box.write(f"/etc/systemd/system/adv-app{n}.service",
                  f"[Service]\nExecStart=/usr/bin/python3 {APP} app {n} {DIR}\n")  # fmt: skip
    box.run("systemctl daemon-reload && systemctl enable --now ipcjanitor-clock.timer")
    if served:
        box.run("systemctl enable --now ipcjanitor-hook.socket")
    for n in range(1, APPS + 1):
        box.run(f"ipcjanitor install-hook adv-app{n}.service")
    if brk is not None:  # after install-hook, which checks what it installs
        dev = str(os.stat("/dev/shm").st_dev)  # the host's: broken.py refuses to run there
        text = BROKEN.format(python=VENV_BIN / "python", root=str(ROOT), dev=dev, brk=brk)
        box.run("rm /usr/bin/ipcjanitor")
        box.write("/usr/bin/ipcjanitor", text, 0o755)
    return box


def schedule(
    seed: int, steps: int, replay: list[dict[str, Any]] | None = None, brk: str | None = None
) -> dict[str, Any]:
    """One schedule in its own contained systemd: drawn from seed, or the given steps."""
    start = time.monotonic()
    served = brk is None and seed % 2 == 1  # odd seeds: the hooks go to the hook server
    box = boot(brk, served)
    run = Run(box, seed)
    error = None
    try:
        for s in replay or ():
            run.do(s)
        for _ in range(steps if replay is None else 0):
            run.step()
        run.finish()
        hooked = box.run("journalctl --no-pager -o cat -u 'adv-app*' | grep -c ' stopped: '",
                         check=False).stdout.strip()  # fmt: skip
        run.stats["hooks run by systemd (ExecStopPost=)"] = int(hooked or 0)
        if served:
            alone = box.run("journalctl --no-pager -o cat -u 'adv-app*' | grep -c "
                            "'(the hook runs in it)'", check=False).stdout.strip()  # fmt: skip
            run.stats["of them served by the hook server"] = int(hooked or 0) - int(alone or 0)
    except (AssertionError, TimeoutError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[-3000:]
    finally:
        box.stop()
    return {"seed": seed, "steps": run.steps, "executed": len(run.steps), "stats": run.stats,
            "violations": run.violations, "harness_error": error,
            "seconds": round(time.monotonic() - start, 1)}  # fmt: skip


def summary(results: list[dict[str, Any]]) -> str:
    steps = sum(r["executed"] for r in results)
    runs = sum(v for r in results for k, v in r["stats"].items()
               if k.split()[0] in ("clean", "scan", "hook"))  # fmt: skip
    by_systemd = sum(r["stats"].get("hooks run by systemd (ExecStopPost=)", 0) for r in results)
    violations = sum(len(r["violations"]) for r in results)
    errors = sum(bool(r["harness_error"]) for r in results)
    return (
        f"adversary units: {len(results)} schedules, {steps} steps, {runs} janitor runs, "
        f"{by_systemd} hooks by systemd, {violations} violations, {errors} harness errors"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1-2")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--keep", type=Path, default=ROOT / "build" / "adversary")
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    fixed = iter(range(int(lo), int(hi or lo) + 1))
    end = time.monotonic() + 60 * (args.minutes or 0)
    results = []
    while True:
        if args.minutes is None:
            seed = next(fixed, None)
        else:
            seed = random.randrange(2**31) if time.monotonic() < end else None
        if seed is None:
            break
        r = schedule(seed, args.steps)
        results.append(r)
        print(f"units seed {seed}: {r['executed']} steps, {len(r['violations'])} violations, "
              f"{r['seconds']} s", flush=True)  # fmt: skip
        if r["violations"] or r["harness_error"]:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / f"units-seed-{seed}.json").write_text(json.dumps(r, indent=1))
            print(f"  kept in {args.keep / f'units-seed-{seed}.json'}: "
                  f"{r['harness_error'] or r['violations'][:3]}", flush=True)  # fmt: skip
    print(summary(results))
    sys.exit(1 if any(r["violations"] or r["harness_error"] for r in results) else 0)


if __name__ == "__main__":
    main()

"""What of a hooked unit's execution context reaches its root hook, asked of systemd.

`ExecStopPost=-+...` drops User=, capabilities and the sandboxing options, but not the
options that make the command's file-system view (measured under systemd 252, tests/e2e/
test_hook_context.py): the drop-in's absolute paths, the policy, the lock and the journal
socket are then whatever that view names, and a tree the service's user writes becomes code
root runs. install-hook refuses such a unit and doctor reports one already hooked.

The options are read with `systemctl show`, which gives what systemd loaded — the unit file
and every drop-in — within a deadline (a hung bus is a refusal, never a wait).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

DEADLINE = 10.0  # seconds for one `systemctl show`
_ROOT_ADVICE = (
    "set RootDirectoryStartOnly=yes (then only ExecStart= runs in that root) or remove it"
)
_MOUNT_ADVICE = (
    "remove it (or move what it mounts so the unit no longer needs it); there is no "
    "per-command way to leave it, so until then rely on ipcjanitor.timer"
)
# option -> what to do; each one survives `+` and changes what some path names
FILE_SYSTEM_OPTIONS: Mapping[str, str] = {
    "RootDirectory": _ROOT_ADVICE,
    "RootImage": _ROOT_ADVICE,
    "BindPaths": _MOUNT_ADVICE,
    "BindReadOnlyPaths": _MOUNT_ADVICE,
    "TemporaryFileSystem": _MOUNT_ADVICE,
    "MountImages": _MOUNT_ADVICE,
    "ExtensionImages": _MOUNT_ADVICE,
    "ExtensionDirectories": _MOUNT_ADVICE,
}
_ONLY_FOR_START = ("RootDirectory", "RootImage")  # left out of ExecStopPost= by StartOnly
_ASKED = (*FILE_SYSTEM_OPTIONS, "RootDirectoryStartOnly", "LoadState", "NeedDaemonReload",
          "LogNamespace")  # fmt: skip
PROBE_INSTANCE = "ipcjanitor-check"  # a template is asked about through this instance
UNIT_DIRS = (Path("/etc/systemd/system"), Path("/run/systemd/system"), Path("/lib/systemd/system"),
             Path("/usr/lib/systemd/system"))  # fmt: skip


class UnitView(NamedTuple):
    """The options of one loaded unit that decide what its hook's paths name."""

    unit: str
    load_state: str
    need_reload: bool
    options: dict[str, str]  # FILE_SYSTEM_OPTIONS that are set: name -> systemd's value
    log_namespace: str

    def problems(self) -> list[str]:
        """PURE: one sentence per option that changes the hook's view, with what to do."""
        return [
            f"{name}={value} (systemd.exec(5)) also applies to its ExecStopPost= hook, which "
            f"would run as root whatever that view puts at the hook's paths: {advice}"
            for name, advice in FILE_SYSTEM_OPTIONS.items()
            if (value := self.options.get(name))
        ]


Reader = Callable[[str], "tuple[UnitView | None, str | None]"]


def parse_show(unit: str, text: str) -> UnitView:
    """PURE: `systemctl show -p ...` output (KEY=VALUE lines) as a UnitView."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            props[key] = value.strip()
    start_only = props.get("RootDirectoryStartOnly") == "yes"
    options = {
        name: props[name]
        for name in FILE_SYSTEM_OPTIONS
        if props.get(name) and not (start_only and name in _ONLY_FOR_START)
    }
    return UnitView(
        unit=unit,
        load_state=props.get("LoadState", ""),
        need_reload=props.get("NeedDaemonReload") == "yes",
        options=options,
        log_namespace=props.get("LogNamespace", ""),
    )


def asked_name(unit: str) -> str:
    """The unit systemd is asked about: a template through one instance of it."""
    prefix, at, rest = unit.partition("@")
    if at and rest.startswith("."):  # worker@.service: systemd loads no template itself
        return f"{prefix}@{PROBE_INSTANCE}{rest}"
    return unit


def read(unit: str) -> tuple[UnitView | None, str | None]:
    """What systemd loaded for `unit` (view, None), or (None, why) without an answer."""
    asked = asked_name(unit)
    try:
        done = subprocess.run(
            ["systemctl", "show", "--no-pager", f"--property={','.join(_ASKED)}", "--", asked],
            capture_output=True, text=True, timeout=DEADLINE, check=False, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "SYSTEMD_PAGER": ""},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"`systemctl show {asked}` gave no answer within {DEADLINE:g} s"
    except OSError as exc:
        return None, f"cannot run systemctl ({exc.strerror})"
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return None, f"`systemctl show {asked}`: {why[0]}"
    view = parse_show(unit, done.stdout)
    if not view.load_state:  # `systemctl` in a chroot, or without systemd: "ignoring command"
        why = done.stderr.strip().splitlines()[-1:] or ["no LoadState in its answer"]
        return None, f"`systemctl show {asked}`: {why[0]}"
    return view, None


def instance_names(template: str, dirs: Iterable[Path]) -> list[str]:
    """Instances of `template` with drop-ins of their own (worker@3.service.d/) in dirs."""
    prefix, _, rest = template.partition("@")
    found = set()
    for d in dirs:
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for name in entries:
            unit = name.removesuffix(".d")
            ours = unit.startswith(f"{prefix}@") and unit.endswith(rest)
            if name.endswith(".d") and ours and len(unit) > len(template):
                found.add(unit)
    return sorted(found)


def views(
    unit: str, dirs: Iterable[Path], reader: Reader = read
) -> tuple[list[UnitView], str | None]:
    """The unit's view — a template's through one instance and each instance with drop-ins
    of its own — or ([], why) when systemd cannot say."""
    names = [unit]
    if asked_name(unit) != unit:
        names += instance_names(unit, dirs)
    found = []
    for name in names:
        view, why = reader(name)
        if view is None:
            return [], why
        found.append(view)
    return found, None

"""`install-hook`: write the ExecStopPost= drop-in that runs `hook` (hookrun.py) after a stop."""

from __future__ import annotations

import errno
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .. import chase
from ..errors import ExitCode, NotPermittedError, PolicyErrors, UsageError
from ..policy.load import load_policy
from ..policy.model import format_duration
from ..systemd import unitctx
from ..systemd.unitfiles import read_aliases
from ..unitnames import primary_name, with_type
from . import dropins

DROPIN_NAME = "ipcjanitor.conf"
# Built with the package (setup.py, ipcjanitor/ipcjanitor-hook.c): it belongs to this ipcjanitor.
TRAMPOLINE = Path(__file__).resolve().parent.parent / "ipcjanitor-hook"
DROPIN_MODE, DIR_MODE = 0o644, 0o755  # whatever the caller's umask: systemd reads them as root
# Words that need no quotes in an Exec line (after % and $ are doubled).
_PLAIN = re.compile(r"[A-Za-z0-9/_.,:=+@%$-]+")


def hook_argv(policy: str | None) -> list[str]:
    """The hook's command: the clean-environment trampoline, then this very ipcjanitor."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "ipcjanitor":  # the console script
        exe = [os.path.abspath(argv0)]
    else:  # python -m ipcjanitor; -I: neither the working directory nor PYTHON* count
        exe = [sys.executable, "-I", "-m", "ipcjanitor"]
        _same_package_when_isolated(sys.executable)
    for path in (TRAMPOLINE, exe[0]):
        _check_only_root_can_change(path)
    pol = [f"--policy={os.path.abspath(policy)}"] if policy else []
    return [str(TRAMPOLINE), *exe, *pol, "hook"]


def exec_line(argv: Sequence[str]) -> str:
    """argv as one ExecStart=-style command line: each word quoted and escaped as needed.

    systemd.syntax(7): a word in double quotes may hold spaces, with backslash escapes for
    `\\` and `"`; systemd.unit(5): `%` starts a specifier (`%%` is one %); systemd.service(5):
    `$` starts an environment variable (`$$` is one $). A control character (a newline would
    end the directive) cannot be written safely, and is refused.
    """
    return " ".join(_exec_word(word) for word in argv)


def _exec_word(word: str) -> str:
    bad = [c for c in word if ord(c) < 0x20 or ord(c) == 0x7F]
    if bad or not word:
        what = f"the control character {bad[0]!r}" if bad else "an empty argument"
        raise UsageError(
            f"{word!r} holds {what}: it cannot be written into an ExecStopPost= line; "
            "move or rename it"
        )
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"{word!r} is not valid UTF-8, which unit files must be: move or rename it"
        ) from None
    word = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _same_package_when_isolated(python: str) -> None:
    """`python -I -m ipcjanitor` from / must import this package, not another or none."""
    here = str(Path(__file__).resolve().parent.parent)
    found = subprocess.run(
        [python, "-I", "-c", "import ipcjanitor, os; print(os.path.dirname(ipcjanitor.__file__))"],
        capture_output=True, text=True, cwd="/", env={}, check=False,
    )  # fmt: skip
    there = found.stdout.strip()
    if found.returncode != 0 or os.path.realpath(there) != here:
        raise NotPermittedError(
            f"the hook would run `{python} -I -m ipcjanitor`, which imports "
            f"{there or 'no ipcjanitor'}, not this one ({here}); install ipcjanitor (pip "
            "install .) and run install-hook with its `ipcjanitor` command; no drop-in was written"
        )


def _check_only_root_can_change(path: Path | str) -> None:
    """What the hook runs as root must exist and be changeable by root alone, all the way up:
    walked as the policy is (chase.check_executable), symlinks and their directories too."""
    named = Path(path)
    if named == TRAMPOLINE and not named.is_file():
        raise NotPermittedError(
            f"{named} is missing: this ipcjanitor was installed without its clean-environment "
            "trampoline (it needs gcc and a static libc: apt-get install libc6-dev, then "
            "install ipcjanitor again); without it the hook would run as root with the "
            "service's environment, so no drop-in was written"
        )
    try:
        chase.check_executable(str(named))
    except chase.Refused as exc:
        raise NotPermittedError(
            f"{exc}: the hook would run {named} as root after every stop, and someone else "
            "could change it (or install ipcjanitor where only root can write); no drop-in "
            "was written"
        ) from None


def dropin_text(command: str) -> str:
    return (
        "# Written by `ipcjanitor install-hook`; remove with `ipcjanitor install-hook --remove`.\n"
        "# After every stop of this service (SIGKILL included), remove the System V IPC objects\n"
        "# its ipcjanitor policy owner left that are provably unused.\n"
        "# '+': full privileges even with User=; '-': a janitor failure never fails the service.\n"
        "# ipcjanitor-hook (static) starts it with none of this service's Environment=, only\n"
        "# SERVICE_RESULT, EXIT_CODE, EXIT_STATUS and INVOCATION_ID.\n"
        "[Service]\n"
        f"ExecStopPost=-+{command}\n"
    )


_SPECIFIERS = re.compile(r"%[nNiI]")  # the unit's name or instance: one file per unit


def metrics_word(path: str, unit: str) -> str:
    """`--metrics=FILE` for the hook's line: FILE absolute, its only % systemd's %n, %N, %i
    or %I, one of which a template's FILE needs (else its instances share one file)."""
    if "%" in _SPECIFIERS.sub("", path):
        raise UsageError(
            f"--metrics {path}: the only % a hook's FILE may hold is %n, %N, %i or %I "
            "(systemd's unit name or instance)"
        )
    if "@." in unit and not _SPECIFIERS.search(path):
        raise UsageError(
            f"--metrics {path}: every instance of {unit} would rewrite the same file; put %n "
            "or %i in its name (e.g. /var/lib/prometheus/node-exporter/ipcjanitor-%n.prom)"
        )
    word = _exec_word(f"--metrics={os.path.abspath(path)}")
    return word.replace("%%", "%")  # every % in it is a specifier (checked above)


def kept_metrics(text: str) -> str | None:
    """The --metrics FILE of the hook line in an existing drop-in (install-hook's or one
    added by hand, `--metrics FILE` or `--metrics=FILE`), as its line says it; None if none."""
    for line in text.splitlines():
        if not line.startswith("ExecStopPost=") or "hook" not in line:
            continue
        try:
            words = shlex.split(line.partition("=")[2])
        except ValueError:
            continue
        for i, w in enumerate(words):
            if w.startswith("--metrics="):
                return w.partition("=")[2]
            if w == "--metrics" and i + 1 < len(words):
                return words[i + 1]
    return None


def install_hook(
    unit: str,
    *,
    runtime: bool = False,
    remove: bool = False,
    policy: str | None = None,
    metrics: str | None = None,
    no_metrics: bool = False,
) -> ExitCode:
    """Write (or remove) the ExecStopPost= drop-in that hooks `unit`, and reload systemd."""
    unit = with_type(unit)  # `install-hook leaky` is leaky.service, as in systemctl
    if not unit.endswith(".service") or "/" in unit:
        raise UsageError(f"{unit!r} is not a service: ExecStopPost= hooks go on .service units")
    aliases = read_aliases()
    primary = primary_name(unit, aliases)
    if primary != unit:  # the drop-in, its %n and the cgroup all go by the primary name
        print(f"{unit} is an alias of {primary}, the name systemd runs it as: hooking {primary}")
        unit = primary
    base = Path("/run/systemd/system" if runtime else "/etc/systemd/system")
    path = base / f"{unit}.d" / DROPIN_NAME
    if remove:
        if not path.exists():
            print(f"{path} does not exist: nothing to remove")
            return ExitCode.OK
        with _as_root(path):
            path.unlink()
        _note(path, None)
        with_reload = _reload()
        print(f"removed {path}{with_reload}")
        return ExitCode.OK
    policy_path = policy or os.environ.get("IPCJANITOR_POLICY") or None
    loaded = load_policy(policy_path)
    owners = loaded.owners_for_unit(unit, aliases)
    if not owners:
        raise PolicyErrors.one(
            None, None, f"no policy owner is bound to {unit}: add unit = \"{unit}\" to the "
            "owner's table (e.g. in /etc/ipcjanitor/policy.d/NAME.toml), check it with "
            "`ipcjanitor policy check`, then run install-hook again",
        )  # fmt: skip
    for o in owners:
        if loaded.grace(o):
            print(
                f"warning: owner {o.name} has min_age {format_duration(loaded.grace(o))}: the "
                "hook keeps objects used that recently; set min_age = \"0s\" on the owner to "
                "clean right after a kill", file=sys.stderr,
            )  # fmt: skip
    more = _metrics(path, unit, metrics, no_metrics)
    text = dropin_text(f"{exec_line(hook_argv(policy_path))} --unit=%n{more}")
    check_context(unit)
    if path.exists() and path.read_text() == text:
        _note(path, text)  # one an older install-hook wrote goes on the list too
        print(f"{path} is already installed: nothing changed")
        return ExitCode.OK
    with _as_root(path):
        write_dropin(path, text)
    _note(path, text)
    print(f"wrote {path}{_reload()}")
    _say_if_unserved()
    return ExitCode.OK


def _say_if_unserved(socket_path: str | None = None) -> None:
    """A note when no hook server listens: each hook then starts an interpreter."""
    from .serve import SOCKET_PATH, unserved  # noqa: PLC0415

    if (why := unserved(socket_path or SOCKET_PATH)) is not None:
        print(f"note: {why}")


def _metrics(path: Path, unit: str, metrics: str | None, no_metrics: bool) -> str:
    """The hook line's --metrics (with its space): asked for, else the one the existing
    drop-in has (re-running install-hook keeps it, and says so), unless --no-metrics."""
    if metrics is not None:
        return " " + metrics_word(metrics, unit)
    if no_metrics:
        return ""
    try:
        old = kept_metrics(path.read_text())
    except OSError:
        old = None
    if old is None:
        return ""
    kept = old.replace("%%", "%").replace("$$", "$")  # as written in the line
    print(f"kept --metrics {kept} from {path} (--no-metrics drops it)")
    return " " + metrics_word(kept, unit)


def check_context(unit: str, reader: unitctx.Reader | None = None) -> None:
    """Refuse (77) a unit whose options give its hook another file-system view.

    The hook runs in the unit's own mount namespace: RootDirectory=, BindPaths= and the
    rest (unitctx.FILE_SYSTEM_OPTIONS) decide what the drop-in's absolute paths, the policy
    and the lock name there, and a tree the service's user writes would be code root runs.
    What systemd has loaded is what counts (drop-ins included); unit files changed since
    the last reload are loaded first.
    """
    ask = reader or unitctx.read
    found, why = unitctx.views(unit, unitctx.UNIT_DIRS, ask)
    if any(v.need_reload for v in found):
        _reload()
        found, why = unitctx.views(unit, unitctx.UNIT_DIRS, ask)
    if why is not None:
        raise NotPermittedError(
            f"cannot ask systemd which file-system view {unit}'s hook would run in ({why}): "
            "its RootDirectory=, BindPaths=, ... decide whether the hook would run code others "
            "control; run install-hook where systemd runs; no drop-in was written"
        )
    for v in found:
        if v.need_reload:
            raise NotPermittedError(
                f"systemd has not loaded {v.unit}'s latest unit files: run `systemctl "
                "daemon-reload`, then install-hook again; no drop-in was written"
            )
        if v.load_state != "loaded":
            raise UsageError(
                f"{v.unit} is not a unit systemd can load (LoadState={v.load_state or '?'}): "
                "install (or unmask) its unit file first, then install-hook again"
            )
    problems = [f"{v.unit}: {p}" for v in found for p in v.problems()]
    if problems:
        raise NotPermittedError(
            "the hook runs inside the service's file-system view; "
            + "; ".join(problems)
            + "; no drop-in was written"
        )
    for v in found:
        if v.log_namespace:
            print(
                f"warning: {v.unit} has LogNamespace={v.log_namespace}: its hook's records "
                f"go there too (journalctl --namespace={v.log_namespace} "
                f"IPCJANITOR_UNIT={unit})", file=sys.stderr,
            )  # fmt: skip


def write_dropin(path: Path, text: str) -> None:
    """path (and its directory, where missing) with explicit modes, replaced in one rename.

    The directory is reached as root reaches policy (chase.open_directory: every component
    root's and writable by root alone, missing ones made) and the file written by its
    descriptor; the modes are set with fchmod, not left to the umask of whoever runs
    install-hook: UMask=0000 or a root shell's `umask 0` would make a drop-in anyone can rewrite.
    """
    try:
        dfd, _ = chase.open_directory(
            str(path.parent), strict=os.geteuid() == 0, others_above=False, create_mode=DIR_MODE
        )
    except chase.Refused as exc:
        if exc.code in (errno.EACCES, errno.EPERM):
            raise PermissionError(exc.code, os.strerror(exc.code), str(path)) from None
        raise NotPermittedError(f"{exc}; no drop-in was written") from None
    try:
        chase.write_file_at(dfd, path.name, text.encode(), DROPIN_MODE, replace=True)
    finally:
        os.close(dfd)


def _note(path: Path, text: str | None) -> None:
    """Keep the list the package's purge reads (dropins.py); a failure is only a warning."""
    try:
        dropins.note(path, text)
    except (NotPermittedError, OSError) as exc:
        what = "deletes it" if text is not None else "would delete a drop-in written here later"
        print(
            f"warning: {path} is not noted in {dropins.LIST_DIR / dropins.LIST_NAME} ({exc}): "
            f"purging the ipcjanitor package no longer {what}", file=sys.stderr,
        )  # fmt: skip


@contextmanager
def _as_root(what: Path) -> Iterator[None]:
    try:
        yield
    except PermissionError as exc:
        raise NotPermittedError(f"{what}: {exc.strerror}; run install-hook as root") from None


def _reload() -> str:
    from ..systemd.bus import daemon_reload  # noqa: PLC0415

    why = daemon_reload()
    if why is None:
        return "; systemd reloaded"
    print(
        f"warning: could not reload systemd: {why}; run `systemctl daemon-reload`", file=sys.stderr
    )
    return ""

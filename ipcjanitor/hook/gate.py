"""The hook's own way in: its argv without argparse, and the fast exit when no owner is bound.

`hook` runs after every stop of every hooked service, so it must start fast (bench/). Two
things here keep argparse, the TOML parser and the engine out of that path:

- `hook_call` reads a hook's argv by the grammar `cli.py` gives argparse (the options
  --policy, -v, -q before or after `hook`; --unit, --json, --metrics after it), and returns
  None for anything else or anything unusual (an abbreviation, a value that starts with "-",
  `--`, -v with -q): the full command line then parses it, and reports its usage errors.
  A property test holds the two to the same answer for every argv it generates.
- `unbound` proves, without parsing TOML, that no policy owner is bound to the unit. An
  owner is bound by `unit = "NAME"` (or the template "PREFIX@.service"), so a policy whose
  files never contain that text cannot bind it. Anything unusual — a file the full path would
  refuse, the name present anywhere, any backslash — returns None and the full path parses,
  validates and decides as always.

Imports only os, stat and errno (through policy_files and chase), and unitnames.
"""

from __future__ import annotations

import os

from ..policy import files as policy_files
from ..systemd.unitfiles import read_aliases
from ..unitnames import names_of, with_type

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence

_GLOBAL_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}
_VALUED = ("--policy", "--unit", "--metrics")  # --unit and --metrics only after `hook`


class HookCall:
    """What a `hook` command line asks for (argparse's namespace, for the hook alone)."""

    __slots__ = ("json", "metrics", "policy", "quiet", "unit")

    def __init__(
        self, unit: str, policy: str | None, json: bool, metrics: str | None, quiet: bool
    ) -> None:
        self.unit = with_type(unit)  # `--unit leaky` is leaky.service, as systemctl reads it
        self.policy = policy
        self.json = json
        self.metrics = metrics
        self.quiet = quiet

    def _fields(self) -> tuple[object, ...]:
        return (self.unit, self.policy, self.json, self.metrics, self.quiet)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HookCall) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"HookCall{self._fields()!r}"


def hook_call(argv: Sequence[str]) -> HookCall | None:
    """The hook call argv makes, when it is one in the plain forms; else None (full path)."""
    values: dict[str, str] = {}
    flags: set[str] = set()
    seen_hook = False
    args = list(argv)
    while args:
        a = args.pop(0)
        name, eq, value = a.partition("=")
        if a == "hook" and not seen_hook:
            seen_hook = True
        elif a in _GLOBAL_FLAGS:
            flags.add(_GLOBAL_FLAGS[a])
        elif a == "--json" and seen_hook:
            flags.add("json")
        elif name in _VALUED and (seen_hook or name == "--policy"):
            if not eq:
                if not args or args[0].startswith("-"):
                    return None  # argparse takes "-..." for an option (or a negative number)
                value = args.pop(0)
            values[name] = value  # a later occurrence wins, as in argparse
        else:
            return None
    unit = values.get("--unit")
    if not seen_hook or not unit or {"verbose", "quiet"} <= flags:
        return None
    return HookCall(
        unit, values.get("--policy"), "json" in flags, values.get("--metrics"), "quiet" in flags
    )


def unbound_unit(argv: Sequence[str]) -> str | None:
    """The unit of a `hook` call that no policy file can bind; None means: take the full path."""
    call = hook_call(argv)
    return call.unit if call is not None and unbound(call) else None


def unbound(call: HookCall) -> bool:
    """True when no policy file can bind call.unit; False means: take the full path.

    The policy is --policy or the search path, never IPCJANITOR_POLICY: the hook runs as root
    with the service's Environment=. Files are read as the full path reads them (chase.py), so
    whatever it would refuse (a FIFO; as root, a file others can change) falls through to it.
    """
    # worker@3.service is bound by "worker@.service" too, and by any alias of either
    names = names_of(call.unit, read_aliases())
    # argv bytes that are not UTF-8 come as surrogates: back to those bytes, as in the file
    spelled = [n.encode("utf-8", "surrogateescape") for n in names]
    files, problems = policy_files.read(call.policy, strict=os.geteuid() == 0)
    if problems:
        return False  # let the full path report them
    # any backslash may spell a name the bytes do not show: "\u0062", "a\\x2db" (which is
    # systemd's a\x2db), a line-ending backslash inside a multi-line string; a name mentioned
    # anywhere may bind it: parse it properly
    return not any(b"\\" in text or any(n in text for n in spelled) for _, text in files)


def no_owner_message(unit: str) -> str:
    """What the hook prints when no owner is bound to unit (fast and full path alike)."""
    return f"no policy owner is bound to {unit}: nothing to do"


def run_call(call: HookCall, hook_pid: int | None = None) -> int:
    """One hook run: the fast exit when no owner can be bound, else the full hook. hook_pid:
    the launcher the hook server runs it for (hook/serve.py); None: this process."""
    if not call.json and unbound(call):  # the fast exit: no TOML parser, no engine
        try:
            if not call.quiet:
                print(no_owner_message(call.unit))
            return 0
        except ValueError:  # a unit name stdout cannot encode: the full path reports it
            pass
    from .run import run_hook  # noqa: PLC0415

    return run_hook(call, hook_pid)

"""The hook's fast exit: prove, without parsing TOML, that no policy owner is bound to a unit.

`hook` runs after every stop of every hooked service, so when nothing is bound to the unit it
must cost little more than starting Python (bench/). An owner is bound by `unit = "NAME"`
(or the template "PREFIX@.service"), so a policy whose files never contain that text cannot
bind it. Anything unusual — other arguments, a file the full path would refuse, the name
present anywhere, any backslash — returns None and the full path parses, validates and decides
as always.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import policy_files


def _hook_unit(argv: Sequence[str]) -> tuple[str, str | None] | None:
    """(unit, --policy value) when argv is exactly a hook call, else None."""
    unit = policy = None
    seen_hook = False
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "hook" and not seen_hook:
            seen_hook = True
        elif a in ("-q", "--quiet", "-v", "--verbose", "--json"):
            continue
        elif a.startswith("--policy=") and not seen_hook:
            policy = a.split("=", 1)[1]
        elif a == "--policy" and not seen_hook and args:
            policy = args.pop(0)
        elif a.startswith("--unit=") and seen_hook:
            unit = a.split("=", 1)[1]
        elif a == "--unit" and seen_hook and args:
            unit = args.pop(0)
        else:
            return None
    if not seen_hook or not unit:
        return None
    return unit, policy


def unbound_unit(argv: Sequence[str]) -> str | None:
    """The unit of a `hook` call that no policy file can bind; None means: take the full path.

    The policy is --policy or the search path, never IPCJANITOR_POLICY: the hook runs as root
    with the service's Environment=. Files are read as the full path reads them (chase.py), so
    whatever it would refuse (a FIFO; as root, a file others can change) falls through to it.
    """
    call = _hook_unit(argv)
    if call is None:
        return None
    unit, policy = call
    names = [unit.encode()]
    if "@" in unit:  # worker@3.service is bound by "worker@.service" too
        prefix, _, rest = unit.partition("@")
        names.append(f"{prefix}@.{rest.rpartition('.')[2]}".encode())
    files, problems = policy_files.read(policy, strict=os.geteuid() == 0)
    if problems:
        return None  # let the full path report them
    for _, text in files:
        # any backslash may spell a name the bytes do not show: "\u0062", "a\\x2db" (which
        # is systemd's a\x2db), a line-ending backslash inside a multi-line string
        if b"\\" in text or any(name in text for name in names):
            return None  # mentioned, or possibly: parse it properly
    return unit

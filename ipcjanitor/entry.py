"""The console script: a `hook` call takes its own short way in; anything else, the full CLI."""

from __future__ import annotations

import gc
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .hookgate import HookCall


def main(argv: Sequence[str] | None = None) -> int:
    """Run ipcjanitor: a hook call by its own grammar (hookgate.py), the rest by argparse."""
    # A run builds a few small immutable records per IPC object and makes no reference
    # cycles; the cyclic collector would only re-walk them (measured: 40 % of reading 64k).
    gc.disable()
    args = sys.argv[1:] if argv is None else list(argv)
    from .hookgate import hook_call  # noqa: PLC0415

    call = hook_call(args)
    if call is None:
        from .cli import main as full_main  # noqa: PLC0415

        return full_main(args)
    return _hook(call)


def _hook(call: HookCall) -> int:
    from .hookgate import no_owner_message, unbound  # noqa: PLC0415

    if not call.json and unbound(call):  # the fast exit: no TOML parser, no engine
        try:
            if not call.quiet:
                print(no_owner_message(call.unit))
            return 0
        except ValueError:  # a unit name stdout cannot encode: the full path reports it
            pass
    from .cli import guarded  # noqa: PLC0415
    from .hookrun import run_hook  # noqa: PLC0415

    return guarded(lambda: run_hook(call))

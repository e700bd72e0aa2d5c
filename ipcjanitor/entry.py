"""The console script: `hook`, `record-clock` and `serve-hooks` take their own short ways in;
anything else, the full CLI."""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ipcjanitor; with argv None (the process itself), a hook exits without teardown."""
    if argv is None:  # the process itself, not a caller's (a test run keeps its collector)
        # A run builds a few small immutable records per IPC object and makes no reference
        # cycles; the cyclic collector would only re-walk them (measured: 40 % of reading 64k).
        gc.disable()
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["record-clock"]:  # ipcjanitor-clock.service: a reading, at once
        from .commands.clock import main as record_clock  # noqa: PLC0415

        code = record_clock(args[1:])
    elif args[:1] == ["serve-hooks"]:  # ipcjanitor-hook.service, started by its socket
        from .hook.serve import main as serve_hooks  # noqa: PLC0415

        code = serve_hooks(args[1:])
    else:
        from .hook.gate import hook_call, run_call  # noqa: PLC0415

        call = hook_call(args)
        if call is None:
            from .cli import main as full_main  # noqa: PLC0415

            return full_main(args)
        code = run_call(call)
    if argv is None:  # a hook's or recorder's process: nothing to tear down but modules (bench/)
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Flush what was printed, then end the process without unwinding the interpreter.

    Finalizing ~100 modules costs a hook 3-4 ms after its work is done (bench/README.md);
    files are flushed here, sockets and locks close with the process.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout: as the interpreter would
            code = code or 120
    os._exit(code)

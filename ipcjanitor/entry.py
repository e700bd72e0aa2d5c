"""The console script: the hook's fast exit first, then the full command line."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    # A run builds a few small immutable records per IPC object and makes no reference
    # cycles; the cyclic collector would only re-walk them (measured: 40 % of reading 64k).
    gc.disable()
    args = sys.argv[1:] if argv is None else list(argv)
    from .hookgate import unbound_unit  # noqa: PLC0415

    unit = unbound_unit(args)
    if unit is not None:
        if "-q" not in args and "--quiet" not in args:
            print(f"no policy owner is bound to {unit}: nothing to do")
        return 0
    from .cli import main as full_main  # noqa: PLC0415

    return full_main(args)

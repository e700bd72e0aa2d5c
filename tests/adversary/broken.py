"""ipcjanitor, deliberately broken: the harness's proof that it can fail.

`python -m tests.adversary.broken BREAK ARGS...` runs `ipcjanitor ARGS...` with one defect
patched in, only in this process (the installed code is untouched). The oracle runs it in
place of `python -m ipcjanitor` when ADVERSARY_BREAK names a break (test_broken.py): a
harness that stays green against these is itself broken.

  ignore-life    every claimed object that shows life (attached,
                 waited on, a live recorded pid, a mapping, an fd) is judged stale instead
  blind-holders  the scan of /proc/PID/{maps,fd} and /proc/locks sees no holder of any
                 POSIX object, and the kernel's write lease (a second witness) is not asked

Runs only inside the harness's namespaces (tests/adversary/outside.py), like run.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from ipcjanitor.engine import decide, remove_posix
from ipcjanitor.kernel import holders
from ipcjanitor.model import Verdict


def _ignore_life() -> None:
    def stale_if_alive(real: Callable[..., Any]) -> Callable[..., Any]:
        def broken(*args: Any, **kwargs: Any) -> Any:
            d = real(*args, **kwargs)
            if d.verdict is Verdict.IN_USE and d.owner is not None:  # the harness's: no unit
                return d._replace(verdict=Verdict.STALE, reason=f"BROKEN, ignores: {d.reason}")
            return d

        return broken

    decide.decide_one = stale_if_alive(decide.decide_one)
    decide.decide_posix = stale_if_alive(decide.decide_posix)


def _blind_holders() -> None:
    def nobody(*_args: Any, **_kwargs: Any) -> tuple[dict[Any, Any], list[str], int]:
        return {}, [], 1

    holders.scan_holders = nobody

    def no_lease(fd: int) -> bool:  # the kernel gives none: the re-read alone decides
        return False

    remove_posix._take_lease = no_lease


BREAKS: dict[str, Callable[[], None]] = {
    "ignore-life": _ignore_life,
    "blind-holders": _blind_holders,
}


def main() -> int:
    host_shm = os.environ.get("ADVERSARY_HOST_SHM_DEV")
    if host_shm is None or str(os.stat("/dev/shm").st_dev) == host_shm:
        raise SystemExit("tests.adversary.broken runs only inside the harness's namespaces")
    if len(sys.argv) < 2 or sys.argv[1] not in BREAKS:
        raise SystemExit(f"usage: python -m tests.adversary.broken {{{','.join(BREAKS)}}} ARGS")
    BREAKS[sys.argv[1]]()
    from ipcjanitor.entry import main as janitor  # imported after the patch

    return janitor(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())

"""`ipcjanitor record-clock`: one reading of the clocks into root's record of their steps.

What ipcjanitor-clock.service runs, started by ipcjanitor-clock.timer on every step of the
wall clock and once as the timer starts; the console script takes its own short way here
(entry.py), with no argparse and no policy, so a reading is taken within milliseconds of the
step. Not in --help: nobody needs to run it by hand (doing so does no harm).
"""

from __future__ import annotations

import os
import sys

from ..errors import ExitCode, NotPermittedError, guarded
from ..kernel.clock import record

USAGE = "usage: ipcjanitor record-clock (ipcjanitor-clock.service runs it; it takes no arguments)"


def main(args: list[str]) -> int:
    if args:
        print(USAGE, file=sys.stderr)
        return ExitCode.USAGE
    return guarded(_record)


def _record() -> int:
    if os.geteuid() != 0:
        raise NotPermittedError(
            "only root records the clock's steps (ipcjanitor-clock.service does, as root): "
            "a user's record would prove nothing to root's runs"
        )
    record()
    return ExitCode.OK

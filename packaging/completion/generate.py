"""Write ipcjanitor's zsh and fish completions from its argparse parser with shtab.

    python packaging/completion/generate.py zsh > packaging/completion/_ipcjanitor
    python packaging/completion/generate.py fish > packaging/completion/ipcjanitor.fish

(`make completion` does both; tests/test_completion_shells.py fails when either differs from
what the parser would give now.) Owner and unit names come from `ipcjanitor policy owners` and
`policy units`, as the hand-written bash completion's do. shtab is a build-time tool only
(pyproject's dev extra pins it); the installed program never imports it.
"""

from __future__ import annotations

import argparse
import sys

import shtab

from ipcjanitor.cli import build_parser

OWNERS = "ipcjanitor policy owners 2>/dev/null"
UNITS = "ipcjanitor policy units 2>/dev/null"


def parser() -> argparse.ArgumentParser:
    """The program's parser, with what each value completes to."""
    p = build_parser()
    subs = {
        name: sub
        for action in p._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }
    for name, sub in subs.items():
        for action in sub._actions:
            if action.dest == "owner" and name != "learn":  # learn --owner names a new one
                action.complete = shtab.cmd(OWNERS)
            elif action.dest == "unit" and name in ("hook", "install-hook"):
                action.complete = shtab.cmd(UNITS)
            elif action.dest in ("policy", "metrics", "path"):
                action.complete = shtab.FILE
    for action in p._actions:
        if action.dest == "policy":
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return p


def main(shell: str) -> str:
    return shtab.complete(parser(), shell)


if __name__ == "__main__":
    sys.stdout.write(main(sys.argv[1]))

"""Write ipcjanitor's zsh and fish completions from its argparse parser with shtab.

    python packaging/completion/generate.py zsh > packaging/completion/_ipcjanitor
    python packaging/completion/generate.py fish > packaging/completion/ipcjanitor.fish

(`make completion` does both; tests/test_completion_shells.py fails when either differs from
what the parser would give now.) Owner and unit names come from `ipcjanitor policy owners` and
`policy units`, with the --policy given on the line, as the hand-written bash completion's
do. shtab is a build-time tool only (pyproject's dev extra pins it); the installed program
never imports it.
"""

from __future__ import annotations

import argparse
import sys

import shtab

from ipcjanitor.cli import build_parser

# The --policy given on the line (before or after the command, --policy=PATH too; the last one
# wins, as in ipcjanitor itself), for `policy owners` / `policy units`: what bash's does.
# zsh's is an action run when the value is completed (not at every TAB, as `($(...))` is),
# reading LBUFFER: the words _arguments passes a subcommand no longer hold a global --policy.
ZSH_NAMES = r"""
_ipcjanitor_policy_names() {
  local -a line found names
  local i
  line=(${(z)LBUFFER})
  for ((i = 2; i <= $#line; i++)); do
    case ${line[i]} in
      --policy) (( i < $#line )) && found=(--policy "${(Q)line[i + 1]}") ;;
      --policy=*) found=("--policy=${(Q)${line[i]#--policy=}}") ;;
    esac
  done
  names=(${(f)"$(ipcjanitor "${found[@]}" policy $1 2>/dev/null)"})
  compadd -a names
}
"""
FISH_NAMES = """
function _ipcjanitor_policy_names
    set -l found
    set -l tokens (commandline -opc)
    set -l n (count $tokens)
    for i in (seq 2 $n)
        switch $tokens[$i]
            case --policy
                test $i -lt $n; and set found --policy $tokens[(math $i + 1)]
            case '--policy=*'
                set found $tokens[$i]
        end
    end
    ipcjanitor $found policy $argv[1] 2>/dev/null
end
"""


def names(what: str) -> dict[str, object]:
    """Owner or unit names from `ipcjanitor [--policy P] policy WHAT` (zsh and fish)."""
    return {
        "zsh": f"{{_ipcjanitor_policy_names {what}}}",
        "fish": f"(_ipcjanitor_policy_names {what})",
        "preamble": {"zsh": ZSH_NAMES, "fish": FISH_NAMES},
    }


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
                action.complete = names("owners")
            elif action.dest == "unit" and name in ("hook", "install-hook"):
                action.complete = names("units")
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

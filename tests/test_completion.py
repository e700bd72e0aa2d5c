"""bash completion: commands, options, owner names and unit names from the policy."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "packaging" / "bash-completion" / "ipcjanitor"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
GLOBAL = ["--help", "--policy", "--quiet", "--verbose"]  # before or after any command


def complete(*words: str) -> list[str]:
    """COMPREPLY for a command line whose last word is being completed."""
    quoted = " ".join(f"'{w}'" for w in words)
    script = f"source {SCRIPT}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _ipcjanitor; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return sorted(w for w in out.stdout.splitlines() if w)


@pytest.fixture
def policy(tmp_path: Path) -> str:
    p = tmp_path / "p.toml"
    p.write_text(
        '[owners.billing]\nunit = "billing.service"\nkeys = ["0x10"]\n'
        '[owners.batch]\nunit = "batch@.service"\nkeys = ["0x20"]\n'
    )
    return str(p)


def test_commands_and_options() -> None:
    assert complete("ipcjanitor", "") == sorted(
        ["scan", "clean", "hook", "policy", "install-hook", "doctor", "learn"]
    )
    assert complete("ipcjanitor", "cl") == ["clean"]
    assert complete("ipcjanitor", "clean", "--") == sorted(
        [
            "--dry-run",
            "--json",
            "--kind",
            "--id",
            "--key",
            "--metrics",
            "--owner",
            "--output",
            "--bytes",
            "--noheadings",
            "--raw",
            "--notruncate",
            "--no-legend",
            "--no-pager",
            *GLOBAL,
        ]
    )
    assert complete("ipcjanitor", "scan", "--kind", "s") == ["sem", "shm"]
    assert complete("ipcjanitor", "scan", "--kind", "p") == ["posix-mq", "posix-sem", "posix-shm"]
    assert complete("ipcjanitor", "policy", "") == ["check", "owners", "units"]


def test_owner_and_unit_names_come_from_the_policy(policy: str) -> None:
    assert complete("ipcjanitor", "--policy", policy, "scan", "--owner", "b") == [
        "batch",
        "billing",
    ]
    assert complete("ipcjanitor", "--policy", policy, "install-hook", "") == [
        "batch@.service",
        "billing.service",
    ]
    assert complete("ipcjanitor", f"--policy={policy}", "hook", "--unit", "bi") == [
        "billing.service"
    ]


def test_learn_options_and_a_new_owner_name(policy: str) -> None:
    assert complete("ipcjanitor", "learn", "--") == sorted(["--for", "--owner", "--write", *GLOBAL])
    assert complete("ipcjanitor", "learn", "x.service", "--for", "") == [
        "10m",
        "1h",
        "30s",
        "5m",
        "60s",
    ]
    # learn --owner names a new owner: the policy's names would be refused
    assert complete("ipcjanitor", "--policy", policy, "learn", "x.service", "--owner", "b") == []
    assert complete("ipcjanitor", "--policy", policy, "scan", "--owner", "b") != []


def test_global_options_are_offered_after_the_command_too() -> None:
    for command in (["scan"], ["clean"], ["hook"], ["doctor"], ["learn", "x.service"],
                    ["install-hook"], ["policy"], ["policy", "check"]):  # fmt: skip
        offered = complete("ipcjanitor", *command, "--")
        assert {"--policy", "--verbose", "--quiet"} <= set(offered), command
    assert complete("ipcjanitor", "scan", "--q") == ["--quiet"]
    assert complete("ipcjanitor", "policy", "check", "-q", "") != ["check", "owners", "units"]
    assert complete("ipcjanitor", "policy", "-q", "") == ["check", "owners", "units"]


def test_the_policy_after_the_command_and_the_last_one_count(policy: str, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[owners.other]\nunit = "other.service"\nkeys = ["0x30"]\n')
    assert complete("ipcjanitor", "scan", "--policy", policy, "--owner", "b") == [
        "batch",
        "billing",
    ]
    assert complete("ipcjanitor", "--policy", str(other), "hook", f"--policy={policy}",
                    "--unit", "b") == ["batch@.service", "billing.service"]  # fmt: skip
    # as bash splits it: --policy = PATH
    assert complete("ipcjanitor", "--policy", "=", policy, "scan", "--owner", "") == [
        "batch",
        "billing",
    ]


def _parsers() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every (sub)command's words and parser: the program's, then each subcommand's."""
    from ipcjanitor.cli import build_parser

    out: list[tuple[list[str], argparse.ArgumentParser]] = []
    todo: list[tuple[list[str], argparse.ArgumentParser]] = [([], build_parser())]
    while todo:
        words, p = todo.pop(0)
        out.append((words, p))
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [([*words, name], sub) for name, sub in action.choices.items()]
    return out


def _subcommands(p: argparse.ArgumentParser) -> list[str]:
    return sorted(name for action in p._actions
                  if isinstance(action, argparse._SubParsersAction)
                  for name in action.choices)  # fmt: skip


def test_every_subcommand_and_option_of_the_parser_is_offered() -> None:
    """The bash completion is written by hand (shtab's bash could not keep --policy=<TAB>
    completing a file): this is what keeps it from drifting from the parser."""
    for words, p in _parsers():
        options = sorted({s for action in p._actions for s in action.option_strings})
        line = ["ipcjanitor", *words] if words[:1] != ["learn"] else ["ipcjanitor", *words, "x"]
        assert complete(*line, "-") == options, words
        if subs := _subcommands(p):
            assert complete("ipcjanitor", *words, "") == subs, words


def test_an_option_value_after_an_equals_sign_completes_as_the_option_s(
    policy: str, tmp_path: Path
) -> None:
    """bash splits --policy=PATH into --policy, =, PATH: a file is completed there (shtab's
    bash offers the commands), with bash-completion's _init_completion or without it."""
    start = str(tmp_path / "p")
    assert complete("ipcjanitor", "--policy", "=", start) == [policy]
    assert complete("ipcjanitor", "clean", "--metrics", "=", start) == [policy]
    assert complete("ipcjanitor", "--policy", "=", policy, "scan", "--kind", "=", "po") == [
        "posix-mq", "posix-sem", "posix-shm"]  # fmt: skip

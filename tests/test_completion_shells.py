"""zsh and fish completion, generated from the argparse parser by shtab
(packaging/completion/generate.py): up to date with the parser, and loaded by the real shells,
which complete a subcommand, an option and an option's choices."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPLETION = ROOT / "packaging" / "completion"
CI = bool(os.environ.get("CI"))
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def generate(shell: str) -> str:
    spec = importlib.util.spec_from_file_location("generate", COMPLETION / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.main(shell))


@pytest.mark.parametrize(("shell", "name"), [("zsh", "_ipcjanitor"), ("fish", "ipcjanitor.fish")])
def test_the_shipped_completion_is_what_the_parser_gives(shell: str, name: str) -> None:
    assert (COMPLETION / name).read_text() == generate(shell), "run `make completion`"


def fish_complete(line: str) -> list[str]:
    script = f"source {COMPLETION / 'ipcjanitor.fish'}; complete -C '{line}'"
    out = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, text=True,
                         env=ENV, check=True, timeout=60).stdout  # fmt: skip
    return sorted(w.split("\t")[0] for w in out.splitlines() if w)


def zsh_complete(tmp_path: Path, *lines: str) -> list[list[str]]:
    """What zsh offers after TAB at the end of each line (compinit, an interactive zsh on a
    pseudo-terminal: tests/data/zsh-complete.zsh)."""
    out = tmp_path / "offered"
    subprocess.run(["zsh", "-f", str(ROOT / "tests" / "data" / "zsh-complete.zsh"),
                    str(COMPLETION), str(out), *lines],
                   env=ENV, check=True, timeout=60, capture_output=True)  # fmt: skip
    words = out.read_text().splitlines()
    got: list[list[str]] = [[]]
    for w in words:
        if w == "--":
            got.append([])
        elif w not in got[-1]:  # zsh adds each match twice: described, then listed
            got[-1].append(w)
    assert len(got) == len(lines) + 1, words
    return [sorted(g) for g in got[:-1]]


@pytest.mark.skipif(shutil.which("fish") is None and not CI, reason="needs fish")
def test_fish_completes_commands_options_and_choices() -> None:
    assert fish_complete("ipcjanitor cl") == ["clean"]
    assert fish_complete("ipcjanitor ") == sorted(
        ["scan", "clean", "hook", "policy", "install-hook", "doctor", "learn"]
    )
    assert fish_complete("ipcjanitor clean --dr") == ["--dry-run"]
    assert fish_complete("ipcjanitor scan --kind ") == sorted(
        ["shm", "sem", "msg", "posix-shm", "posix-sem", "posix-mq"]
    )
    assert fish_complete("ipcjanitor policy ") == ["check", "owners", "units"]
    assert "--policy" in fish_complete("ipcjanitor hook --")  # the global options, after it


@pytest.mark.skipif(shutil.which("zsh") is None and not CI, reason="needs zsh")
def test_zsh_completes_commands_options_and_choices(tmp_path: Path) -> None:
    got = zsh_complete(tmp_path, "ipcjanitor cl", "ipcjanitor clean --dr", "ipcjanitor scan --kind p",
                       "ipcjanitor policy ", "ipcjanitor install-hook --r")  # fmt: skip
    assert got == [
        ["clean"],
        ["--dry-run"],
        ["posix-mq", "posix-sem", "posix-shm"],
        ["check", "owners", "units"],
        ["--remove", "--runtime"],
    ]


def test_the_packages_install_them_where_the_shells_look() -> None:
    install = (ROOT / "packaging" / "debian" / "ipcjanitor.install").read_text()
    assert "packaging/completion/_ipcjanitor usr/share/zsh/vendor-completions/" in install
    assert "packaging/completion/ipcjanitor.fish usr/share/fish/vendor_completions.d/" in install
    spec = (ROOT / "packaging" / "rpm" / "ipcjanitor.spec").read_text()
    assert "%{zsh_completions_dir}/_ipcjanitor\n" in spec
    assert "%{fish_completions_dir}/ipcjanitor.fish\n" in spec


@pytest.fixture
def policy(tmp_path: Path) -> str:
    p = tmp_path / "p.toml"
    p.write_text(
        '[owners.billing]\nunit = "billing.service"\nkeys = ["0x10"]\n'
        '[owners.batch]\nunit = "batch@.service"\nkeys = ["0x20"]\n'
    )
    return str(p)


@pytest.mark.skipif(shutil.which("fish") is None and not CI, reason="needs fish")
def test_fish_takes_owner_and_unit_names_from_the_policy_on_the_line(
    policy: str, tmp_path: Path
) -> None:
    """As bash does: a --policy before or after the command, --policy=PATH too; the last wins."""
    other = tmp_path / "other.toml"
    other.write_text('[owners.other]\nunit = "other.service"\nkeys = ["0x30"]\n')
    assert fish_complete(f"ipcjanitor --policy {policy} scan --owner b") == ["batch", "billing"]
    assert fish_complete(f"ipcjanitor clean --policy={policy} --owner bi") == ["billing"]
    assert fish_complete(f"ipcjanitor --policy {other} hook --policy {policy} --unit b") == [
        "batch@.service", "billing.service"]  # fmt: skip
    assert fish_complete(f"ipcjanitor --policy {policy} install-hook bi") == ["billing.service"]


@pytest.mark.skipif(shutil.which("zsh") is None and not CI, reason="needs zsh")
def test_zsh_takes_owner_and_unit_names_from_the_policy_on_the_line(
    policy: str, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[owners.other]\nunit = "other.service"\nkeys = ["0x30"]\n')
    got = zsh_complete(tmp_path, f"ipcjanitor --policy {policy} scan --owner b",
                       f"ipcjanitor clean --policy={policy} --owner bi",
                       f"ipcjanitor --policy {other} hook --policy {policy} --unit b",
                       f"ipcjanitor --policy {policy} install-hook bi")  # fmt: skip
    assert got == [
        ["batch", "billing"],
        ["billing"],
        ["batch@.service", "billing.service"],
        ["billing.service"],
    ]

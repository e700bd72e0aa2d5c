"""The command line: exit codes, usage errors, policy check. Read-only commands only here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipcjanitor.cli import main, parse


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_usage_errors_exit_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 64
    with pytest.raises(SystemExit) as info:
        main(["scan", "--kind", "pipe"])
    assert info.value.code == 64
    assert main([]) == 64


def test_policy_check_prints_owners(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.billing]\nunit = "billing.service"\nkeys = ["0x61040000-0x6104ffff"]\n')
    rc, out, _ = run(capsys, "policy", "check", str(p))
    assert rc == 0
    assert "[billing]" in out and "0x61040000-0x6104ffff" in out and "billing.service" in out
    assert out.rstrip().endswith("policy OK")


def test_policy_errors_exit_78_and_name_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\nbogus = 1\n')
    rc, _, err = run(capsys, "--policy", str(p), "scan")
    assert rc == 78
    assert f"{p}:3: [owners.a] unknown field 'bogus'" in err and "nothing was removed" not in err
    rc, _, err = run(capsys, "--policy", str(p), "clean")
    assert rc == 78 and "policy error, nothing was removed" in err
    rc, _, err = run(capsys, "policy", "check", str(p))
    assert rc == 78 and "nothing was removed" not in err


def test_unknown_owner_filter_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    rc, _, err = run(capsys, "--policy", str(p), "scan", "--owner", "nope")
    assert rc == 64 and "no owner named nope" in err and "owners: a" in err


def test_scan_json_is_one_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # read-only: scanning the host's tables never changes them
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    rc, out, _ = run(capsys, "--policy", str(p), "scan", "--json", "--kind", "shm")
    assert rc == 0
    doc = json.loads(out)
    assert set(doc) == {"objects", "summary"}
    assert doc["summary"]["total"] == len(doc["objects"])
    assert all(o["kind"] == "shm" for o in doc["objects"])


def test_quiet_prints_only_the_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    rc, out, _ = run(capsys, "--policy", str(p), "-q", "scan")
    assert rc == 0 and len(out.splitlines()) == 1 and "object" in out


def test_metrics_need_no_prometheus_client(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    empty = tmp_path / "p.toml"
    empty.write_text("min_age = '1h'\n")  # no owners: even if it ran, nothing could be removed
    rc, _, err = run(capsys, "--policy", str(empty), "clean", "--metrics", str(tmp_path / "m.prom"))
    assert rc == 0, err
    assert "ipcjanitor_run_duration_seconds" in (tmp_path / "m.prom").read_text()


# Each command with arguments of its own; the global options may go before or after them.
COMMANDS = [
    ["scan", "--json", "--kind", "shm"],
    ["clean", "--dry-run", "--owner", "a"],
    ["hook", "--unit", "a.service", "--json"],
    ["install-hook", "--runtime", "a.service"],
    ["policy", "check", "p.toml"],
    ["policy", "owners"],
    ["policy", "units"],
    ["doctor", "--json"],
    ["learn", "a.service", "--for", "5s"],
]
GLOBALS = [["--policy", "/etc/x.toml"], ["--policy=/etc/x.toml"], ["-q"], ["--quiet"], ["-v"],
           ["--verbose"], ["--policy", "/etc/x.toml", "-v"]]  # fmt: skip


def placements(command: list[str], options: list[str]) -> list[list[str]]:
    """The options before the command, right after its name(s), and after its arguments."""
    names = 2 if command[0] == "policy" else 1
    return [
        [*options, *command],
        [*command[:names], *options, *command[names:]],
        [*command, *options],
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("options", GLOBALS, ids=" ".join)
def test_global_options_go_before_or_after_the_command(
    command: list[str], options: list[str]
) -> None:
    before, *after = placements(command, options)
    expected = vars(parse(before))
    assert expected["policy"] == ("/etc/x.toml" if "/etc/x.toml" in " ".join(options) else None)
    assert expected["quiet"] == any(o in ("-q", "--quiet") for o in options)
    assert expected["verbose"] == any(o in ("-v", "--verbose") for o in options)
    for argv in after:
        assert vars(parse(argv)) == expected, argv


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_the_later_policy_wins_and_v_q_stay_exclusive(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in placements(command, ["--policy", "/late.toml"])[1:]:
        assert parse(["--policy", "/early.toml", *argv]).policy == "/late.toml"
    assert parse(["--policy=/a", *command, "--policy=/b", "--policy=/c"]).policy == "/c"
    assert parse(["-q", *command, "-q"]).quiet  # saying it twice is fine
    for first, second in (("-v", "-q"), ("-q", "--verbose")):
        for argv in (
            [first, *command, second],
            [*placements(command, [first])[1], second],
            [first, second, *command],
        ):
            with pytest.raises(SystemExit) as info:
                parse(argv)
            assert info.value.code == 64, argv
            assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "--policy"],  # a value is missing
        ["hook", "--unit", "a.service", "--bogus"],
        ["--json", "scan"],  # a command's own option before the command
        ["policy", "check", "a", "b"],
        ["scan", "-qv"],
    ],
)
def test_usage_errors_after_the_command_still_exit_64(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 64
    assert "usage: ipcjanitor" in capsys.readouterr().err


def test_options_after_the_command_act(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Not just parsed: -q, -v and --policy after the command change what a run does."""
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nkeys = ["0x10"]\n')
    rc, quiet, _ = run(capsys, "scan", "--kind", "shm", "-q", "--policy", str(p))
    assert rc == 0 and len(quiet.splitlines()) == 1
    rc, _, err = run(capsys, "scan", "--kind", "shm", "--policy", str(p), "-v")
    assert rc == 0 and f"policy from {p}" in err and "has no unit" in err
    rc, out, _ = run(capsys, "policy", "owners", f"--policy={p}")
    assert (rc, out) == (0, "a\n")
    rc, out, _ = run(capsys, "policy", "check", "-q", str(p))
    assert rc == 0 and "[a]" in out


def test_the_handoff_gap_is_said_where_the_operator_decides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.fast]\nkeys = ["0x7e000010"]\nmin_age = "0s"\n')
    rc, out, _ = run(capsys, "policy", "check", str(p))
    assert rc == 0 and "has no unit and min_age 0: an object handed off" in out
    rc, _, err = run(capsys, "--policy", str(p), "scan", "-v")  # reads the tables, removes none
    assert rc == 0 and "has no unit and min_age 0: an object handed off" in err
    rc, _, err = run(capsys, "--policy", str(p), "scan")
    assert "handed off" not in err


def test_the_commands_table_is_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """Each row of cli.COMMANDS is a subcommand with its help, and its body exists."""
    import importlib

    from ipcjanitor import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(sub.choices, dict) and list(sub.choices) == list(cli.COMMANDS)
    for name, row in cli.COMMANDS.items():
        assert callable(getattr(importlib.import_module(row.module), row.function)), name
    assert {n for n, r in cli.COMMANDS.items() if r.removes} == {"clean", "hook"}


def test_a_library_call_leaves_the_collector_on() -> None:
    import gc

    from ipcjanitor.entry import main as entry_main

    with pytest.raises(SystemExit):
        entry_main(["--version"])
    assert gc.isenabled()

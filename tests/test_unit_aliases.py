"""Unit-file aliases: read from the search path as systemd reads it, resolved purely."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.kernel.processes import running_units
from ipcjanitor.policy.load import load_policy
from ipcjanitor.policy.model import Policy, alias_notes
from ipcjanitor.systemd.unitfiles import read_aliases, unit_aliases
from ipcjanitor.unitnames import names_of, primary_name

ALIASES = {
    "mysql.service": "mariadb.service",
    "db.service": "mysql.service",  # a chain
    "autovt@.service": "getty@.service",  # a template
    "tty9@x.service": "getty@tty9.service",  # an instance of its own
    "loop-a.service": "loop-b.service",
    "loop-b.service": "loop-a.service",
}


def test_primary_name_follows_chains_templates_and_instances() -> None:
    assert primary_name("mysql.service", ALIASES) == "mariadb.service"
    assert primary_name("db.service", ALIASES) == "mariadb.service"
    assert primary_name("autovt@tty1.service", ALIASES) == "getty@tty1.service"
    assert primary_name("autovt@.service", ALIASES) == "getty@.service"
    assert primary_name("tty9@x.service", ALIASES) == "getty@tty9.service"
    assert primary_name("mariadb.service", ALIASES) == "mariadb.service"
    assert primary_name("other.service", ALIASES) == "other.service"
    assert primary_name("loop-a.service", ALIASES) in {"loop-a.service", "loop-b.service"}


def test_names_of_a_unit_include_each_alias_and_its_template_aliases() -> None:
    assert set(names_of("mariadb.service", ALIASES)) == {
        "mariadb.service",
        "mysql.service",
        "db.service",
    }
    assert set(names_of("getty@tty1.service", ALIASES)) >= {
        "getty@tty1.service",
        "getty@.service",
        "autovt@.service",
        "autovt@tty1.service",
    }


unit = st.from_regex(r"[a-c]{1,2}(@[a-c]?)?\.service", fullmatch=True)


@given(st.dictionaries(unit, unit, max_size=8), unit)
def test_primary_name_ends_and_is_stable_on_chains_without_loops(
    aliases: dict[str, str], name: str
) -> None:
    first = primary_name(name, aliases)  # terminates, loops included
    seen = {name}
    n = name
    looped = False
    while n in aliases:  # a loop in the map: any name on it may come out
        n = aliases[n]
        if n in seen:
            looped = True
            break
        seen.add(n)
    if not looped and "@" not in "".join(aliases) + name:
        assert first == n
        assert primary_name(first, aliases) == first


def _unit_dirs(tmp_path: Path) -> tuple[str, ...]:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "mariadb.service").write_text("[Service]\n")
    (lib / "ssh.service").write_text("[Service]\n")
    (lib / "getty@.service").write_text("[Service]\n")
    os.symlink(lib / "mariadb.service", etc / "mysql.service")  # absolute (enable)
    os.symlink("getty@.service", lib / "autovt@.service")  # relative (package)
    os.symlink("/dev/null", etc / "hwclock.service")  # masked: no alias
    os.symlink(lib / "ssh.service", etc / "ssh.service")  # linked, same name: no alias
    (etc / "sshd.service").write_text("[Service]\n")  # a real file earlier in the path ...
    os.symlink("ssh.service", lib / "sshd.service")  # ... shadows this alias
    os.symlink("mariadb.service", lib / "mariadb.socket")  # another type: no alias
    (etc / "multi-user.target.wants").mkdir()
    return (str(etc), str(tmp_path / "missing"), str(lib))


def test_read_aliases_reads_the_path_as_systemd_does(tmp_path: Path) -> None:
    assert read_aliases(_unit_dirs(tmp_path)) == {
        "mysql.service": "mariadb.service",
        "autovt@.service": "getty@.service",
    }


def test_no_unit_bound_reads_nothing(tmp_path: Path) -> None:
    dirs = _unit_dirs(tmp_path)
    assert unit_aliases([], dirs) == {}
    assert unit_aliases(["x.service"], dirs) != {}


def _fake_proc(tmp_path: Path, cgroups: dict[int, str]) -> Path:
    proc = tmp_path / "proc"
    for pid, cg in cgroups.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(f"0::/system.slice/{cg}\n")
    return proc


def test_a_unit_named_by_its_alias_runs_when_its_primary_has_processes(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path, {10: "mariadb.service", 11: "system-getty.slice/getty@tty1.service"}
    )
    primary = {"mysql.service": "mariadb.service", "autovt@.service": "getty@.service"}
    found = running_units(
        ["mysql.service", "autovt@.service", "other.service"], proc, frozenset(), primary
    )
    assert found == {"mysql.service": True, "autovt@.service": True, "other.service": False}
    # without the alias map (the old code) the running service looked stopped
    assert running_units(["mysql.service"], proc, frozenset()) == {"mysql.service": False}


POLICY = """
[owners.db]
unit = "mysql.service"
keys = ["0x1"]
[owners.tty]
unit = "autovt@.service"
keys = ["0x2"]
[owners.plain]
unit = "mariadb.service"
keys = ["0x3"]
"""


def _policy(tmp_path: Path) -> Policy:
    path = tmp_path / "p.toml"
    path.write_text(POLICY)
    return load_policy(str(path), strict_modes=False)


def test_the_hook_of_the_primary_finds_owners_named_by_an_alias(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    found = policy.owners_for_unit("mariadb.service", ALIASES)
    assert {o.name for o in found} == {"db", "plain"}
    assert {o.name for o in policy.owners_for_unit("getty@tty3.service", ALIASES)} == {"tty"}
    assert {o.name for o in policy.owners_for_unit("mariadb.service")} == {"plain"}


def test_policy_check_notes_each_owner_named_by_an_alias(tmp_path: Path) -> None:
    notes = alias_notes(_policy(tmp_path), ALIASES)
    assert len(notes) == 2
    assert "mysql.service is an alias of mariadb.service" in notes[0]

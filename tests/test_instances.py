"""Template owners: `%i` in ftok paths makes one owner per instance found on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.cli import build_parser, main
from ipcjanitor.commands.table import _scope
from ipcjanitor.errors import PolicyErrors
from ipcjanitor.hook.gate import unbound_unit
from ipcjanitor.model import IpcKind, IpcObject
from ipcjanitor.policy.load import load_policy
from ipcjanitor.policy.model import Policy
from ipcjanitor.policy.parse import ftok

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="StrictModes apply to root runs")


def load(path: Path, strict: bool = False) -> Policy:
    return load_policy(str(path), strict_modes=strict)


def obj(key: int, kind: IpcKind = IpcKind.SHM) -> IpcObject:
    return IpcObject(kind, 1, key, 0, 0, 0, 0, 0o600)


def instances(root: Path, *names: str, file: str = "queue") -> dict[str, int]:
    """Make root/NAME/file for each instance; -> instance: its ftok key with proj 'q'."""
    keys = {}
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / file).write_text(name)
        keys[name] = ftok(root / name / file, ord("q"))
    return keys


def policy_file(
    tmp_path: Path, pattern: str, extra: str = "", unit: str = "worker@.service"
) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[owners.workers]\nunit = "{unit}"\nftok = [{{ path = "{pattern}", proj = "q" }}]\n{extra}'
    )
    return path


def test_each_instance_found_on_disk_is_its_own_owner(tmp_path: Path) -> None:
    keys = instances(tmp_path / "srv", "1", "2")
    p = load(policy_file(tmp_path, f"{tmp_path}/srv/%i/queue", 'keys = ["0x7300"]\n'))
    template, one, two = p.owner("workers"), p.owner("workers@1"), p.owner("workers@2")
    assert template and one and two
    assert template.unit == "worker@.service" and template.key_ranges == ((0x7300, 0x7300),)
    assert (one.unit, one.key_ranges) == ("worker@1.service", ((keys["1"], keys["1"]),))
    assert (two.unit, two.key_ranges) == ("worker@2.service", ((keys["2"], keys["2"]),))
    assert (two.template, two.instance, two.min_age, two.kinds) == (
        "workers", "2", template.min_age, template.kinds,
    )  # fmt: skip
    assert p.owner_of(obj(keys["2"])) is two and p.owner_of(obj(0x7300)) is template
    # the hook of worker@2 cleans its own owner and the template's shared keys, not worker@1's
    assert [o.name for o in p.owners_for_unit("worker@2.service")] == ["workers", "workers@2"]
    assert [o.name for o in p.owners_for_unit("worker@.service")] == ["workers"]
    assert p.warnings == ()


def test_every_i_of_a_path_must_agree(tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    for a, b in (("1", "1"), ("1", "2"), ("3", "4")):
        (srv / f"w-{a}" / "data").mkdir(parents=True, exist_ok=True)
        (srv / f"w-{a}" / "data" / f"{b}.q").write_text("")
    p = load(policy_file(tmp_path, f"{srv}/w-%i/data/%i.q"))
    assert [o.name for o in p.owners] == ["workers", "workers@1"]
    assert p.owner("workers@1").key_ranges == ((ftok(srv / "w-1/data/1.q", ord("q")),) * 2,)  # type: ignore[union-attr]


def test_what_is_not_an_instance_is_left_out(tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    instances(srv, "1", ".hidden", "no-queue-here", file="queue")
    (srv / "no-queue-here" / "queue").unlink()
    (srv / "README").write_text("")
    instances(srv, "a b")  # a space: no unit instance can be named so
    p = load(policy_file(tmp_path, f"{srv}/%i/queue"))
    assert [o.name for o in p.owners] == ["workers", "workers@1"]
    (warning,) = p.warnings
    assert f"{srv}/a b/queue" in warning and "not a unit instance name" in warning


def test_an_empty_instance_directory_is_quiet_and_a_missing_one_warns(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    assert load(policy_file(tmp_path, f"{tmp_path}/srv/%i/queue")).warnings == ()
    missing = load(policy_file(tmp_path, f"{tmp_path}/none/%i/queue"))
    (warning,) = missing.warnings
    assert f"{tmp_path}/none" in warning and "no instance" in warning


@pytest.mark.parametrize(
    ("unit", "pattern", "fragment"),
    [
        ("worker.service", "/srv/%i/q", '%i needs a template unit: unit = "worker@.service"'),
        ("worker@2.service", "/srv/%i/q", '%i needs a template unit: unit = "worker@.service"'),
        ("worker@.service", "/srv/%I/q", "only %i (the instance) and %% (a %) are understood"),
        ("worker@.service", "/srv/100%/q", "only %i (the instance) and %% (a %) are understood"),
    ],
)
def test_specifiers_are_checked(tmp_path: Path, unit: str, pattern: str, fragment: str) -> None:
    path = policy_file(tmp_path, pattern, unit=unit)
    with pytest.raises(PolicyErrors) as info:
        load(path)
    assert f"{path}:3: [owners.workers] ftok: " in str(info.value)
    assert fragment in str(info.value)


def test_no_unit_and_i_is_an_error_too(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[owners.w]\nftok = [{ path = "/srv/%i/q", proj = "q" }]\n')
    with pytest.raises(PolicyErrors, match="%i needs a template unit"):
        load(path)


def test_a_double_percent_is_one_percent(tmp_path: Path) -> None:
    (tmp_path / "100%").mkdir()
    (tmp_path / "100%" / "q").write_text("")
    path = tmp_path / "p.toml"
    path.write_text(f'[owners.w]\nftok = [{{ path = "{tmp_path}/100%%/q", proj = "q" }}]\n')
    assert load(path).owners[0].key_ranges == ((ftok(tmp_path / "100%/q", ord("q")),) * 2,)


def test_an_instance_key_the_template_also_claims_names_both(tmp_path: Path) -> None:
    keys = instances(tmp_path / "srv", "1", "2")
    path = policy_file(tmp_path, f"{tmp_path}/srv/%i/queue", f'keys = ["{keys["2"]}"]\n')
    with pytest.raises(PolicyErrors) as info:
        load(path)
    text = str(info.value)
    assert "'workers'" in text and "'workers@2'" in text and f"key 0x{keys['2']:08x}" in text
    assert "one instance's (ftok with %i) or shared by all (keys, ftok without %i)" in text


def test_instances_that_share_a_key_share_it_through_the_template(tmp_path: Path) -> None:
    keys = instances(tmp_path / "srv", "1")
    (tmp_path / "srv" / "2").mkdir()
    os.link(tmp_path / "srv" / "1" / "queue", tmp_path / "srv" / "2" / "queue")
    p = load(policy_file(tmp_path, f"{tmp_path}/srv/%i/queue"))
    assert p.owner_of(obj(keys["1"])) is p.owner("workers")
    assert p.owner("workers@1") is None and p.owner("workers@2") is None
    (warning,) = p.warnings
    assert f"key 0x{keys['1']:08x}" in warning and "instances 1, 2" in warning
    assert "shared" in warning


def test_an_owner_named_like_an_instance_is_an_error(tmp_path: Path) -> None:
    instances(tmp_path / "srv", "2")
    path = policy_file(
        tmp_path, f"{tmp_path}/srv/%i/queue", '[owners."workers@2"]\nkeys = ["0x99"]\n'
    )
    with pytest.raises(
        PolicyErrors,
        match=r"owner 'workers@2' .* and instance 2 of template owner 'workers' .* are both named",
    ):
        load(path)


def test_a_later_files_template_replaces_its_instances_too(tmp_path: Path) -> None:
    instances(tmp_path / "srv", "1")
    d = tmp_path / "d"
    d.mkdir()
    policy_file(d, f"{tmp_path}/srv/%i/queue").rename(d / "10-a.toml")
    (d / "20-b.toml").write_text('[owners.workers]\nunit = "worker@.service"\nkeys = ["0x10"]\n')
    assert [o.name for o in load(d).owners] == ["workers"]


def test_policy_check_shows_the_expansion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = instances(tmp_path / "srv", "1", "2")
    path = policy_file(tmp_path, f"{tmp_path}/srv/%i/queue", 'keys = ["0x7300"]\n')
    assert main(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"  per instance: ftok {tmp_path}/srv/%i/queue proj 'q' -> workers@1, workers@2\n" in out
    assert (
        f"[workers@2]  (instance 2 of workers, {path}:1)\n  unit:  worker@2.service\n"
        f"  keys:  0x{keys['2']:08x}\n  ftok:  {tmp_path}/srv/2/queue proj 'q'\n"
    ) in out
    assert main(["--policy", str(path), "policy", "owners"]) == 0
    assert capsys.readouterr().out.split() == ["workers", "workers@1", "workers@2"]
    assert main(["--policy", str(path), "policy", "units"]) == 0
    assert capsys.readouterr().out.split() == [
        "worker@.service", "worker@1.service", "worker@2.service",
    ]  # fmt: skip


def test_the_hooks_fast_path_never_skips_an_instance(tmp_path: Path) -> None:
    instances(tmp_path / "srv", "2")
    path = policy_file(tmp_path, f"{tmp_path}/srv/%i/queue")
    for unit in ("worker@2.service", "worker@7.service"):
        assert unbound_unit(["--policy", str(path), "hook", "--unit", unit]) is None
        assert load(path).owners_for_unit(unit)


@as_root
def test_as_root_instances_are_looked_for_only_where_root_alone_can_add_them(
    tmp_path: Path,
) -> None:
    srv = tmp_path / "srv"
    instances(srv, "1")
    os.chmod(tmp_path, 0o755)
    policy = policy_file(tmp_path, f"{srv}/%i/queue")
    assert load(policy, strict=True).owner("workers@1")
    srv.chmod(0o777)
    p = load(policy, strict=True)
    assert p.owner("workers@1") is None
    (warning,) = p.warnings
    assert f"{srv} is writable by group or others" in warning and "no instance" in warning
    srv.chmod(0o755)
    os.chown(srv, 1000, 1000)
    assert "owned by uid 1000" in load(policy, strict=True).warnings[0]


def test_owner_workers_takes_the_templates_instances_too(tmp_path: Path) -> None:
    instances(tmp_path / "srv", "1", "2")
    policy = load(policy_file(tmp_path, f"{tmp_path}/srv/%i/queue", 'keys = ["0x7300"]\n'))
    parser = build_parser()
    every = _scope(parser.parse_args(["scan", "--owner", "workers"]), policy)
    assert every.owners == frozenset({"workers", "workers@1", "workers@2"})
    one = _scope(parser.parse_args(["scan", "--owner", "workers@1"]), policy)
    assert one.owners == frozenset({"workers@1"})


def test_learn_writes_a_percent_in_a_path_so_that_it_reads_back(tmp_path: Path) -> None:
    """%i and %% mean something in ftok paths now: a learned path is written escaped."""
    from ipcjanitor.learn.propose import propose, render
    from ipcjanitor.policy.parse import parse_policy_text

    from .test_learn import _candidate, _names, _obj, _seen, _watch

    script = tmp_path / "100%i" / "worker.php"
    script.parent.mkdir()
    script.write_text("<?php\n")
    key = ftok(script, ord("a"))
    watch = _watch(_seen(_obj(IpcKind.SHM, 1, key)), candidates=(_candidate(script),))
    text = render(propose(watch, "php-worker", Policy()), watch, _names)
    owner = parse_policy_text(text, tmp_path / "p.toml")[0]["php-worker"]
    assert owner.key_ranges == ((key, key),) and owner.per_instance == ()


def test_doctor_asks_for_the_templates_hook_not_each_instances(tmp_path: Path) -> None:
    from ipcjanitor.commands.doctor import missing_hooks

    instances(tmp_path / "srv", "1", "2")
    policy = load(policy_file(tmp_path, f"{tmp_path}/srv/%i/queue"))
    assert missing_hooks(policy, [tmp_path / "units"]) == [
        {
            "owner": "workers",
            "unit": "worker@.service",
            "fix": "ipcjanitor install-hook worker@.service",
        }
    ]


def test_completion_offers_instance_owners_and_units(tmp_path: Path) -> None:
    from .test_completion import complete

    instances(tmp_path / "srv", "1", "2")
    path = str(policy_file(tmp_path, f"{tmp_path}/srv/%i/queue"))
    assert complete("ipcjanitor", "--policy", path, "scan", "--owner", "workers@") == [
        "workers@1", "workers@2",
    ]  # fmt: skip
    assert complete("ipcjanitor", "--policy", path, "hook", "--unit", "worker@2") == [
        "worker@2.service"
    ]


def test_two_templates_whose_instances_share_a_name_are_refused(tmp_path: Path) -> None:
    """Found by attacking: template `w` (a@.service) instance `x@y` and template `w@x`
    (b@.service) instance `y` were both owner `w@x@y`; a running b@y's set was then removed
    (verdicts were grouped by owner name, and the hook's scope is by name)."""
    instances(tmp_path / "a", "x@y")
    instances(tmp_path / "b", "y")
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[owners.w]\nunit = "a@.service"\nftok = [{{ path = "{tmp_path}/a/%i/queue", proj = "q" }}]\n'
        f'[owners."w@x"]\nunit = "b@.service"\nftok = [{{ path = "{tmp_path}/b/%i/queue", proj = "q" }}]\n'
    )
    with pytest.raises(PolicyErrors) as err:
        load(path)
    assert "are both named 'w@x@y'" in str(err.value)

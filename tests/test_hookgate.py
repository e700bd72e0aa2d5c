"""The hook's fast exit never skips a unit some owner is bound to."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.cli import main, parse
from ipcjanitor.entry import main as entry_main
from ipcjanitor.hook.gate import HookCall, hook_call, unbound, unbound_unit
from ipcjanitor.policy.load import load_policy

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="StrictModes apply to root runs")


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    (tmp_path / "a.toml").write_text('[owners.a]\nunit = "a.service"\nkeys = ["0x10"]\n')
    (tmp_path / "w.toml").write_text('[owners.w]\nunit = "worker@.service"\nkeys = ["0x20"]\n')
    return tmp_path


def hook(policy: Path | str, unit: str) -> str | None:
    """The unit when the fast exit proves it unbound, else None (the full path decides)."""
    call = hook_call(["--policy", str(policy), "hook", "--unit", unit])
    assert call is not None
    assert unbound_unit(["--policy", str(policy), "hook", "--unit", unit]) == (
        unit if unbound(call) else None
    )
    return unit if unbound(call) else None


def test_unbound_units_exit_fast(policy: Path) -> None:
    assert hook(policy, "b.service") == "b.service"
    call = hook_call([f"--policy={policy}", "-q", "hook", "--unit=b.service", "--json"])
    assert call == HookCall("b.service", str(policy), True, None, True)
    assert unbound(call)


@pytest.mark.parametrize("unit", ["a.service", "worker@3.service", "worker@.service"])
def test_bound_units_take_the_full_path(policy: Path, unit: str) -> None:
    assert hook(policy, unit) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["scan"],
        ["hook"],
        ["hook", "--unit"],
        ["hook", "--unit", "b.service", "--bogus"],
        ["--policy", "/nonexistent", "hook", "--unit", "b.service"],
        ["hook", "hook", "--unit", "x"],
    ],
)
def test_anything_unusual_takes_the_full_path(argv: list[str]) -> None:
    call = hook_call(argv)
    assert call is None or not unbound(call)


@pytest.mark.parametrize(
    ("toml", "unit"),
    [
        ('"\\u0062.service"', "b.service"),
        ('"a\\\\x2db.service"', "a\\x2db.service"),  # systemd's escaping of "a-b"
        ('"""b.\\\n    service"""', "b.service"),  # a line-ending backslash
    ],
    ids=["unicode-escape", "escaped-backslash", "line-continuation"],
)
def test_escapes_take_the_full_path(tmp_path: Path, toml: str, unit: str) -> None:
    (tmp_path / "e.toml").write_text(f'[owners.e]\nunit = {toml}\nkeys = ["0x10"]\n')
    assert load_policy(str(tmp_path), strict_modes=False).owners_for_unit(unit)
    assert hook(tmp_path, unit) is None


def test_a_fifo_takes_the_full_path_without_blocking(tmp_path: Path, watchdog: None) -> None:
    os.mkfifo(tmp_path / "p.toml", 0o644)
    assert hook(tmp_path / "p.toml", "b.service") is None
    assert hook(tmp_path, "b.service") is None


@as_root
def test_what_the_full_path_refuses_takes_the_full_path(tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[owners.a]\nunit = "a.service"\nkeys = ["0x10"]\n')
    assert hook(p, "b.service") == "b.service"
    p.chmod(0o666)  # the full path refuses it (exit 78): the fast path may not say "unbound"
    assert hook(p, "b.service") is None


def test_the_hook_ignores_ipcjanitor_policy_in_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hook runs as root with the service's Environment=: it must not pick its policy."""
    search, chosen = tmp_path / "etc.d", tmp_path / "chosen"
    search.mkdir()
    chosen.mkdir()
    (chosen / "p.toml").write_text("[owners.x]\nunit = 'b.service'\nkeys = ['0x20-0x10']\n")
    monkeypatch.setattr("ipcjanitor.policy.files.SEARCH_PATH", (str(search),))
    monkeypatch.setenv("IPCJANITOR_POLICY", str(chosen))
    call = hook_call(["hook", "--unit", "b.service"])
    assert call is not None and unbound(call)
    assert main(["hook", "--unit", "b.service"]) == 0  # the full path: the search path
    assert "no policy owner is bound to b.service" in capsys.readouterr().out
    assert main(["--policy", str(chosen), "hook", "--unit", "b.service"]) == 78  # still honoured
    assert "reversed" in capsys.readouterr().err


# Unit names as systemd writes them: "\x2d" escapes, templates and instances.
bases = st.from_regex(r"[a-z][a-z0-9_-]{0,8}(\\x2d[a-z0-9]{1,3})?", fullmatch=True)
instances = st.sampled_from(["", "@"]) | st.from_regex(r"@[a-z0-9]{1,4}", fullmatch=True)


def basic(s: str) -> str:
    return s.replace("\\", "\\\\")


@st.composite
def toml_strings(draw: st.DrawFn, value: str) -> str:
    """Every way TOML can spell value: plain, escaped, \\u-escaped, split by a line ending."""
    how = draw(st.sampled_from(["basic", "literal", "multi-literal", "unicode", "continued"]))
    if how == "literal":
        return f"'{value}'"
    if how == "multi-literal":
        return f"'''{value}'''"
    if how == "unicode":
        escaped = draw(st.sets(st.integers(0, len(value) - 1)))
        return (
            '"'
            + "".join(f"\\u{ord(c):04x}" if i in escaped else basic(c) for i, c in enumerate(value))
            + '"'
        )
    if how == "continued":
        cut = draw(st.integers(0, len(value)))
        return f'"""{basic(value[:cut])}\\\n   {basic(value[cut:])}"""'
    return f'"{basic(value)}"'


@given(st.data(), bases, instances)
def test_never_fast_when_the_policy_binds_it(data: st.DataObject, base: str, instance: str) -> None:
    bound = f"{base}{instance}.service"
    spelled = data.draw(toml_strings(bound), label="spelled")
    asked = data.draw(
        st.sampled_from(
            [bound, f"{base}@i.service" if instance == "@" else bound, "other.service"]
        ),
        label="asked",
    )
    with tempfile.TemporaryDirectory() as d:
        Path(d, "p.toml").write_text(f'[owners.x]\nunit = {spelled}\nkeys = ["0x10"]\n')
        policy = load_policy(d, strict_modes=False)
        assert [o.unit for o in policy.owners] == [bound]  # the spelling is right
        fast = hook(d, asked)
        if policy.owners_for_unit(asked):
            assert fast is None
        else:
            assert fast in (None, asked)


def full_path_call(argv: list[str]) -> HookCall | None:
    """What the full command line makes of argv: the hook call, or None (another command or
    a usage error)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            args = parse(argv)  # -h and --version print, then exit
    except SystemExit:
        return None
    if args.command != "hook":
        return None
    return HookCall(args.unit, args.policy, args.json, args.metrics, args.quiet)


# Words a hook's argv is made of, the plain and the unusual: options of both levels, values,
# abbreviations, "--", a value that looks like an option, other commands.
WORDS = st.sampled_from(
    ["hook", "hook", "--unit", "--unit", "--unit=a.service", "--unit=", "a.service",
     "b@1.service", "--policy", "--policy=/p", "--policy=", "/p", "/q", "-q", "--quiet", "-v",
     "--verbose", "--json", "--json=1", "--metrics", "--metrics=/m", "/m", "--", "-1", "-qv",
     "--uni", "--pol=/p", "--unit=-q", "scan", "policy", "-h", "", "--version", "é"]
)  # fmt: skip


@st.composite
def hook_argvs(draw: st.DrawFn) -> tuple[list[str], HookCall]:
    """A valid hook call in a random order: global options anywhere, the hook's after it."""
    unit = draw(st.sampled_from(["a.service", "b@1.service", "c\\x2dd.service"]))
    policy = draw(st.none() | st.sampled_from(["/p", "/etc/my policy.toml", ""]))
    loud = draw(st.sampled_from([None, "-q", "--quiet", "-v", "--verbose"]))
    json = draw(st.booleans())
    metrics = draw(st.none() | st.just("/m.prom"))

    def valued(name: str, value: str) -> list[str]:
        joined = draw(st.booleans()) or not value  # "" only as --name=: argparse's rule
        return [f"{name}={value}"] if joined else [name, value]

    options = [[loud]] if loud else []
    options += [valued("--policy", policy)] if policy is not None else []
    before = [o for o in options if draw(st.booleans())]
    own = [valued("--unit", unit), *([["--json"]] if json else [])]
    own += [valued("--metrics", metrics)] if metrics else []
    after = draw(st.permutations(own + [o for o in options if o not in before]))
    argv = [word for group in [*before, ["hook"], *after] for word in group]
    return argv, HookCall(unit, policy, json, metrics, loud in ("-q", "--quiet"))


@st.composite
def mangled(draw: st.DrawFn) -> list[str]:
    """A valid hook call with random words inserted, replaced, dropped or moved."""
    argv, _ = draw(hook_argvs())
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(argv)))
        how = draw(st.sampled_from(["insert", "replace", "drop", "move"]))
        if how == "insert" or i == len(argv):
            argv.insert(i, draw(WORDS))
        elif how == "replace":
            argv[i] = draw(WORDS)
        elif how == "drop":
            del argv[i]
        else:
            argv.insert(draw(st.integers(0, len(argv) - 1)), argv.pop(i))
    return argv


@given(st.lists(WORDS, max_size=9) | mangled())
def test_the_fast_grammar_never_disagrees_with_argparse(argv: list[str]) -> None:
    """Random argv: whatever the fast path reads as a hook call, argparse reads the same."""
    fast = hook_call(argv)
    if fast is not None:
        assert full_path_call(argv) == fast


@given(hook_argvs())
def test_every_plain_order_takes_the_fast_grammar(case: tuple[list[str], HookCall]) -> None:
    """Options after `hook` (as operators type them) are read without argparse, the same."""
    argv, expected = case
    assert hook_call(argv) == expected
    assert full_path_call(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["hook", "--unit", "-q"],  # argparse: "expected one argument", not a unit named -q
        ["hook", "--unit", "a.service", "-q", "-v"],  # exclusive
        ["-v", "hook", "--unit", "a.service", "--quiet"],
        ["--json", "hook", "--unit", "a.service"],  # the hook's own option before `hook`
        ["hook", "--unit", "a.service", "--", "x"],
    ],
)
def test_what_argparse_refuses_is_never_a_fast_call(argv: list[str]) -> None:
    assert full_path_call(argv) is None
    assert hook_call(argv) is None


def test_entry_and_the_full_path_print_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unbound unit, in the hook's argv forms: the same output and exit code both ways."""
    (tmp_path / "a.toml").write_text('[owners.a]\nunit = "a.service"\nkeys = ["0x10"]\n')
    monkeypatch.setattr("ipcjanitor.policy.files.SEARCH_PATH", (str(tmp_path),))
    for argv in (
        ["hook", "--unit", "b.service"],
        ["hook", "-q", "--unit=b.service"],
        ["hook", "--unit", "b.service", f"--policy={tmp_path}", "--json"],
        [f"--policy={tmp_path}", "hook", "--quiet", "--unit", "b.service", "--json"],
    ):
        fast = entry_main(argv), capsys.readouterr()
        full = main(argv), capsys.readouterr()
        assert fast == full, argv
        assert fast[0] == 0
    assert "no policy owner is bound to b.service" in json.loads(fast[1].out)["summary"]["notes"][0]


@pytest.mark.parametrize(
    ("given", "unit"),
    [("leaky", "leaky.service"), ("leaky.service", "leaky.service"), ("app.socket", "app.socket"),
     ("worker@2", "worker@2.service"), ("worker@.service", "worker@.service"),
     ("my.app", "my.app.service")],
)  # fmt: skip
def test_a_unit_without_a_type_is_a_service_as_in_systemctl(given: str, unit: str) -> None:
    call = hook_call(["hook", f"--unit={given}"])
    assert call is not None and call.unit == unit
    args = parse(["hook", "--unit", given])
    assert HookCall(args.unit, None, False, None, False).unit == unit

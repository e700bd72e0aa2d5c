"""The hook's fast exit never skips a unit some owner is bound to."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.cli import main
from ipcjanitor.hookgate import unbound_unit
from ipcjanitor.policy_load import load_policy

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="StrictModes apply to root runs")


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    (tmp_path / "a.toml").write_text('[owners.a]\nunit = "a.service"\nkeys = ["0x10"]\n')
    (tmp_path / "w.toml").write_text('[owners.w]\nunit = "worker@.service"\nkeys = ["0x20"]\n')
    return tmp_path


@pytest.fixture
def watchdog() -> Iterator[None]:
    """A read that blocks (a FIFO without a writer) fails the test instead of hanging it."""

    class Hung(BaseException):  # not an OSError: nothing on the way may swallow it
        pass

    def hung(signum: int, frame: object) -> None:
        raise Hung("blocked reading the policy")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def hook(policy: Path | str, unit: str) -> str | None:
    return unbound_unit(["--policy", str(policy), "hook", "--unit", unit])


def test_unbound_units_exit_fast(policy: Path) -> None:
    assert hook(policy, "b.service") == "b.service"
    assert (
        unbound_unit([f"--policy={policy}", "-q", "hook", "--unit=b.service", "--json"])
        == "b.service"
    )


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
    assert unbound_unit(argv) is None


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
    monkeypatch.setattr("ipcjanitor.policy_files.SEARCH_PATH", (str(search),))
    monkeypatch.setenv("IPCJANITOR_POLICY", str(chosen))
    assert unbound_unit(["hook", "--unit", "b.service"]) == "b.service"
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

"""The hook's fast exit never skips a unit some owner is bound to."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.hookgate import unbound_unit
from ipcjanitor.policy_load import load_policy


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    (tmp_path / "a.toml").write_text('[owners.a]\nunit = "a.service"\nkeys = ["0x10"]\n')
    (tmp_path / "w.toml").write_text('[owners.w]\nunit = "worker@.service"\nkeys = ["0x20"]\n')
    return tmp_path


def test_unbound_units_exit_fast(policy: Path) -> None:
    assert unbound_unit(["--policy", str(policy), "hook", "--unit", "b.service"]) == "b.service"
    assert (
        unbound_unit([f"--policy={policy}", "-q", "hook", "--unit=b.service", "--json"])
        == "b.service"
    )


@pytest.mark.parametrize("unit", ["a.service", "worker@3.service", "worker@.service"])
def test_bound_units_take_the_full_path(policy: Path, unit: str) -> None:
    assert unbound_unit(["--policy", str(policy), "hook", "--unit", unit]) is None


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


def test_escapes_take_the_full_path(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text('[owners.e]\nunit = "\\u0062.service"\nkeys = ["0x10"]\n')
    assert load_policy(str(tmp_path), strict_modes=False).owners_for_unit("b.service")
    assert unbound_unit(["--policy", str(tmp_path), "hook", "--unit", "b.service"]) is None


names = st.from_regex(r"[a-z][a-z0-9_-]{0,12}(@[a-z0-9]{0,5})?\.service", fullmatch=True)


@given(names, names)
def test_never_fast_when_the_policy_binds_it(bound: str, asked: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        Path(d, "p.toml").write_text(f'[owners.x]\nunit = "{bound}"\nkeys = ["0x10"]\n')
        policy = load_policy(d, strict_modes=False)
        if policy.owners_for_unit(asked):
            assert unbound_unit(["--policy", d, "hook", "--unit", asked]) is None

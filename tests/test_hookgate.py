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


def test_escapes_take_the_full_path(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text('[owners.e]\nunit = "\\u0062.service"\nkeys = ["0x10"]\n')
    assert load_policy(str(tmp_path), strict_modes=False).owners_for_unit("b.service")
    assert hook(tmp_path, "b.service") is None


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


names = st.from_regex(r"[a-z][a-z0-9_-]{0,12}(@[a-z0-9]{0,5})?\.service", fullmatch=True)


@given(names, names)
def test_never_fast_when_the_policy_binds_it(bound: str, asked: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "p.toml").write_text(f'[owners.x]\nunit = "{bound}"\nkeys = ["0x10"]\n')
        policy = load_policy(d, strict_modes=False)
        if policy.owners_for_unit(asked):
            assert hook(d, asked) is None

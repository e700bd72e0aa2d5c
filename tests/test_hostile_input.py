"""Hostile and broken policy input: exit 78 with a message, nothing removed, no traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipcjanitor.entry import main
from ipcjanitor.errors import PolicyErrors
from ipcjanitor.policy_load import load_policy

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="StrictModes apply to root runs")


def check(capsys: pytest.CaptureFixture[str], policy: Path) -> tuple[int, str]:
    rc = main(["--policy", str(policy), "policy", "check"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"\x7fELF\x02\x01\x01\x00\xff\xfe", "not UTF-8"),
        (b"[owners.a\nkeys = 1\n", "not valid TOML"),
        (b"[owners.a]\nkeys = ['0x1ffffffff']\n", "32 bits"),
        (b"[owners.a]\nkeys = [4294967296]\n", "32 bits"),
        (b"[owners.a]\nkeys = ['0x10']\nowner = 'me'\n", "unknown field 'owner'"),
        (b"[owners]\na = 1\n", "must be a table"),
        (b"[[owners.a]]\nkeys = ['0x10']\n", "must be a table"),
    ],
)
def test_bad_files_exit_78(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, fragment: str
) -> None:
    p = tmp_path / "p.toml"
    p.write_bytes(content)
    rc, err = check(capsys, p)
    assert rc == 78 and fragment in err and str(p) in err


def test_a_very_large_file_exits_78(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    with p.open("w") as f:
        f.write("# padding\n" * 600_000)
    rc, err = check(capsys, p)
    assert rc == 78 and "larger than 4 MiB" in err


def test_overlapping_owners_across_drop_ins_name_both_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "10-a.toml").write_text("[owners.a]\nkeys = ['0x100-0x1ff']\n")
    (tmp_path / "20-b.toml").write_text("[owners.b]\nkeys = ['0x180']\n")
    rc, err = check(capsys, tmp_path)
    assert rc == 78 and "10-a.toml" in err and "20-b.toml:1" in err and "both claim" in err


@as_root
def test_a_file_in_a_world_writable_directory_exits_78(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o1777)
    (d / "p.toml").write_text("[owners.a]\nkeys = ['0x10']\n")
    rc, err = check(capsys, d / "p.toml")
    assert rc == 78 and "writable by group or others" in err


@as_root
def test_a_symlink_into_an_unsafe_place_exits_78(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    safe, unsafe = tmp_path / "etc", tmp_path / "drop"
    safe.mkdir(mode=0o755)
    unsafe.mkdir()
    target = unsafe / "p.toml"
    target.write_text("[owners.a]\nkeys = ['0x10']\n")
    os.chown(target, 65534, 65534)
    (safe / "p.toml").symlink_to(target)
    rc, err = check(capsys, safe / "p.toml")
    assert rc == 78 and "owned by uid 65534" in err
    os.chown(target, 0, 0)
    assert check(capsys, safe / "p.toml")[0] == 0  # a symlink to a safe file is fine
    safe.chmod(0o777)  # ...unless others could swap the link itself
    rc, err = check(capsys, safe / "p.toml")
    assert rc == 78 and "writable by group or others" in err


FIELDS = [
    "unit",
    "keys",
    "ftok",
    "kinds",
    "uid",
    "private",
    "min_age",
    "keep_queued_messages",
    "bogus",
]
VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.text(alphabet="0123456789abcdefx-@.service/ ", max_size=20).map(lambda s: f'"{s}"'),
    st.booleans().map(lambda b: str(b).lower()),
    st.lists(st.text(alphabet="0123456789abcdefx-", max_size=12), max_size=3).map(
        lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"
    ),
    st.just('[{ path = "/etc/hostname", proj = "a" }]'),
    st.just("{ }"),
)
owner_tables = st.lists(
    st.tuples(
        st.text(alphabet="abc_-.@", min_size=1, max_size=5),
        st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=5),
    ),
    max_size=4,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(owner_tables, st.one_of(st.none(), VALUES))
def test_fuzzed_policies_load_or_fail_as_policy_errors(
    tables: list[tuple[str, list[tuple[str, str]]]], min_age: str | None
) -> None:
    lines = [] if min_age is None else [f"min_age = {min_age}"]
    for name, fields in tables:
        lines.append(f'[owners."{name}"]')
        lines.extend(f"{k} = {v}" for k, v in dict(fields).items())
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "p.toml")
        p.write_text("\n".join(lines) + "\n")
        try:
            load_policy(str(p), strict_modes=False)
        except PolicyErrors as exc:
            assert str(p) in str(exc)


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_fuzzed_bytes_never_escape_as_a_traceback(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "p.toml")
        p.write_bytes(data)
        assert main(["--policy", str(p), "-q", "policy", "check"]) in (0, 78)

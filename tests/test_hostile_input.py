"""Hostile and broken policy input: exit 78 with a message, nothing removed, no traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipcjanitor.entry import main
from ipcjanitor.errors import PolicyErrors
from ipcjanitor.policy.load import load_policy

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="StrictModes apply to root runs")


GOOD = "[owners.good]\nkeys = ['0x10']\n"
EVIL = "[owners.evil]\nkeys = ['0x10']\n"
NOBODY = 65534


def check(capsys: pytest.CaptureFixture[str], policy: Path) -> tuple[int, str]:
    rc = main(["--policy", str(policy), "policy", "check"])
    return rc, capsys.readouterr().err


def root_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


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
        (b"x = " + b"[" * 3000 + b"]" * 3000, "nesting deeper than the format needs"),
        (b"x = " + b"{a=" * 3000 + b"1" + b"}" * 3000, "nesting deeper than the format needs"),
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


@as_root
def test_a_user_owned_symlink_in_the_middle_of_the_path_exits_78(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # /etc/link/p.toml where `link` is a user's: the user can point it anywhere
    real = root_dir(tmp_path / "real")
    (real / "p.toml").write_text(GOOD)
    link = root_dir(tmp_path / "etc") / "link"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    rc, err = check(capsys, link / "p.toml")
    assert rc == 78 and f"symlink {link} is owned by uid {NOBODY}" in err, err
    os.lchown(link, 0, 0)
    assert check(capsys, link / "p.toml")[0] == 0


@as_root
def test_a_symlink_in_a_directory_others_can_write_exits_78(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real = root_dir(tmp_path / "real")
    (real / "p.toml").write_text(GOOD)
    open_dir = root_dir(tmp_path / "open", 0o777)  # anyone can replace `link`
    (open_dir / "link").symlink_to(real)
    rc, err = check(capsys, open_dir / "link" / "p.toml")
    assert rc == 78 and f"directory {open_dir} is writable by group or others" in err, err


@as_root
def test_the_file_read_is_the_file_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Re-point a symlink on the path the moment the policy file is opened for reading, after
    every check: what is read is still what was checked, never the new target."""
    good = root_dir(tmp_path / "good")
    (good / "p.toml").write_text(GOOD)
    evil = root_dir(tmp_path / "evil", 0o777)
    (evil / "p.toml").write_text(EVIL)
    os.chown(evil, NOBODY, NOBODY)
    os.chown(evil / "p.toml", NOBODY, NOBODY)
    link = root_dir(tmp_path / "etc") / "link"
    link.symlink_to(good)
    flipped: list[object] = []

    def flip(path: object) -> None:
        if str(path).endswith("p.toml") and not flipped:
            (tmp_path / "etc" / "new").symlink_to(evil)
            os.rename(tmp_path / "etc" / "new", link)
            flipped.append(path)

    real_os_open, real_io_open = os.open, io.open

    def os_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if not flags & os.O_PATH:
            flip(path)
        return real_os_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def io_open(file: object, *args: object, **kwargs: object) -> object:
        flip(file)
        return real_io_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    policy = load_policy(str(link / "p.toml"), strict_modes=True)
    assert flipped and os.readlink(link) == str(evil)  # the swap happened mid-read
    assert [o.name for o in policy.owners] == ["good"]


@pytest.mark.parametrize("strict", [True, False], ids=["root", "not-root"])
def test_a_fifo_is_not_a_policy_and_never_blocks(
    tmp_path: Path, watchdog: None, strict: bool
) -> None:
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo, 0o644)
    with pytest.raises(PolicyErrors, match="is a FIFO, not a policy file"):
        load_policy(str(fifo), strict_modes=strict)
    with pytest.raises(PolicyErrors, match="is a FIFO, not a policy file"):
        load_policy(str(tmp_path), strict_modes=strict)  # a *.toml FIFO in a policy directory


def test_a_fifo_exits_78_for_an_unprivileged_user() -> None:
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        fifo = Path(d, "p.toml")
        os.mkfifo(fifo, 0o644)
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        if os.geteuid() != 0:
            as_nobody = []
        cmd = [
            *as_nobody,
            sys.executable,
            "-m",
            "ipcjanitor",
            "--policy",
            str(fifo),
            "policy",
            "check",
        ]
        env = {"PATH": os.environ["PATH"]}
        r = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=60, cwd="/", env=env
        )
    assert r.returncode == 78 and "is a FIFO, not a policy file" in r.stderr, r.stderr


@pytest.mark.parametrize("strict", [True, False], ids=["root", "not-root"])
def test_a_device_is_not_a_policy(tmp_path: Path, strict: bool) -> None:
    with pytest.raises(PolicyErrors, match="is a character device, not a policy file"):
        load_policy("/dev/null", strict_modes=strict)
    (tmp_path / "10-masked.toml").symlink_to("/dev/null")
    with pytest.raises(PolicyErrors, match="is a character device, not a policy file"):
        load_policy(str(tmp_path), strict_modes=strict)


def test_a_directory_where_a_file_is_expected_is_a_policy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policy.toml").mkdir()
    monkeypatch.setattr("ipcjanitor.policy.files.SEARCH_PATH", (str(tmp_path / "policy.toml"),))
    monkeypatch.delenv("IPCJANITOR_POLICY", raising=False)
    with pytest.raises(PolicyErrors, match="is a directory, not a policy file"):
        load_policy(strict_modes=False)


@pytest.mark.parametrize("strict", [True, False], ids=["root", "not-root"])
def test_symlink_loops_are_policy_errors(tmp_path: Path, strict: bool) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    for path in (tmp_path / "a", tmp_path / "a" / "p.toml"):
        with pytest.raises(PolicyErrors, match="too many levels of symbolic links"):
            load_policy(str(path), strict_modes=strict)


def test_a_deeply_nested_policy_is_logged_by_the_hook(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It was a RecursionError: exit 70 and no record of why the hook removed nothing."""
    p = tmp_path / "p.toml"
    p.write_text("[owners.a]\nunit = 'a.service'\nkeys = " + "[" * 3000 + "]" * 3000 + "\n")
    rc = main(["--policy", str(p), "hook", "--unit", "a.service"])
    err = capsys.readouterr().err
    assert rc == 78
    assert "policy error, nothing was removed after a.service stopped" in err  # the record
    assert f"{p}:3: " in err and "nesting deeper than the format needs" in err

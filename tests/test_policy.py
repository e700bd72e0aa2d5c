"""Policy parsing and validation: data-driven tables, ftok against C, property tests."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.cli import main
from ipcjanitor.errors import PolicyErrors
from ipcjanitor.model import IpcKind, IpcObject
from ipcjanitor.policy.load import load_policy
from ipcjanitor.policy.model import EMBEDDED_DEFAULT, Owner, Policy, format_duration
from ipcjanitor.policy.parse import ftok, parse_duration, parse_key_spec
from ipcjanitor.unitnames import unit_matches


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(path: Path) -> Policy:
    return load_policy(str(path), strict_modes=False)


def obj(key: int, kind: IpcKind = IpcKind.SHM, uid: int = 0, cuid: int | None = None) -> IpcObject:
    return IpcObject(kind, 1, key, uid, 0, uid if cuid is None else cuid, 0, 0o600)


GOOD = """
min_age = "15m"
[owners.billing]
unit = "billing-worker.service"
keys = ["0x61040000-0x6104ffff", "0x62000001", 1234]
kinds = ["shm", "sem"]
uid = 0
min_age = "0s"
keep_queued_messages = false

[owners.legacy]
keys = ["100-200"]
"""


def test_a_full_policy_resolves(tmp_path: Path) -> None:
    p = load(write(tmp_path / "p.toml", GOOD))
    billing, legacy = p.owner("billing"), p.owner("legacy")
    assert billing and legacy
    assert billing.key_ranges == ((0x61040000, 0x6104FFFF), (0x62000001, 0x62000001), (1234, 1234))
    assert billing.kinds == {IpcKind.SHM, IpcKind.SEM}
    assert billing.unit == "billing-worker.service" and billing.uid == 0
    assert p.grace(billing) == 0 and p.grace(legacy) == 15 * 60
    assert billing.keep_queued_messages is False and legacy.keep_queued_messages is True
    assert p.owner_of(obj(0x6104E88B)) is billing
    assert p.owner_of(obj(0x6104E88B, IpcKind.MSG)) is None  # kinds
    assert p.owner_of(obj(0x6104E88B, uid=33)) is None  # uid is the object's owner uid
    assert p.owner_of(obj(0x6104E88B, cuid=33)) is billing  # without cuid, any creator
    assert p.owner_of(obj(150, IpcKind.MSG, uid=33)) is legacy
    assert p.owner_of(obj(201)) is None and p.owner_of(obj(0)) is None
    assert billing.source.endswith("p.toml:3")


@pytest.mark.parametrize(
    ("snippet", "line", "fragment"),
    [
        ("min_age = ", 1, "not valid TOML"),
        ("[owners.a]\nkeys = ['0x10']\ncolour = 'red'\n", 3, "unknown field 'colour'"),
        ("speed = 1\n", 1, "unknown field 'speed'"),
        ("[owners.a]\nkeys = ['0xzz']\n", 2, "is not a key"),
        ("[owners.a]\nkeys = ['0x20-0x10']\n", 2, "reversed"),
        ("[owners.a]\nkeys = [0]\n", 2, "key 0 is IPC_PRIVATE"),
        ("[owners.a]\nkeys = ['0-0x10']\n", 2, "key 0 is IPC_PRIVATE"),
        ("[owners.a]\nkeys = ['0x100000000']\n", 2, "32 bits"),
        ("[owners.a]\nkeys = [-5]\n", 2, "outside"),
        ("[owners.a]\nkeys = ['1-2-3']\n", 2, "neither a key nor a range"),
        ("[owners.a]\nkeys = '0x10'\n", 2, "must be a list"),
        ("[owners.a]\nkeys = [true]\n", 2, "a key is a number"),
        ("[owners.a]\nkeys = ['0x10']\nprivate = true\n", 3, "needs uid"),
        ("[owners.a]\nkeys = ['0x10']\nkinds = ['shm', 'pipe']\n", 3, "kinds"),
        ("[owners.a]\nkeys = ['0x10']\nkinds = []\n", 3, "kinds"),
        ("[owners.a]\nkeys = ['0x10']\nmin_age = '10 parsecs'\n", 3, "not a duration"),
        ("[owners.a]\nkeys = ['0x10']\nmin_age = -1\n", 3, "negative"),
        ("[owners.a]\nkeys = ['0x10']\nuid = 'no-such-user-here'\n", 3, "no user named"),
        ("[owners.a]\nkeys = ['0x10']\nunit = 'billing'\n", 3, 'did you mean "billing.service"'),
        ("[owners.a]\nkeys = ['0x10']\nunit = 'a/b.service'\n", 3, "unit name"),
        ("[owners.a]\nkeys = ['0x10']\nprivate = 'yes'\n", 3, "true or false"),
        ("[owners.a]\nkeys = ['0x10']\nkeep_queued_messages = 1\n", 3, "true or false"),
        ("[owners.a]\nunit = 'a.service'\n", 1, "claims nothing"),
        (
            "[owners.a]\nkeys = ['0x10']\nftok = [{ path = '/etc/hostname', proj = 'ab' }]\n",
            3,
            "proj",
        ),
        ("[owners.a]\nkeys = ['0x10']\nftok = [{ file = '/etc/hostname' }]\n", 3, "path ="),
        ("[owners.a]\nkeys = ['0x10']\nftok = [{ path = 'rel/x', proj = 'a' }]\n", 3, "absolute"),
        (
            "[owners.a]\nkeys = ['0x10-0x20']\n[owners.b]\nkeys = ['0x20']\n",
            3,
            "both claim shm/sem/msg key 0x00000020",
        ),
        ("[owners.'a b']\nkeys = ['0x10']\n", 1, "owner names"),
        ("owners = 3\n", 1, "owners must be tables"),
        ("x = " + "[" * 3000 + "]" * 3000, 1, "nesting deeper than the format needs"),
        ("x = " + "{a=" * 3000 + "1" + "}" * 3000, 1, "nesting deeper than the format needs"),
        (
            "[owners.a]\nunit = 'a.service'\nkeys = " + "[" * 600 + "]" * 600,
            3,
            "nesting deeper than the format needs",
        ),
        ("[owners.a]\nkeys = ['0x10']\nuid = '99999999999'\n", 3, "outside 0..4294967294"),
        ("[owners.a]\nkeys = ['0x10']\nuid = '4294967295'\n", 3, "outside 0..4294967294"),
        ("[owners.a]\nkeys = ['0x10']\nuid = 4294967295\n", 3, "outside 0..4294967294"),
        ("[owners.a]\nkeys = ['0x10']\nuid = '\u0661\u0662\u0663'\n", 3, "no user named"),
        ("[owners.a]\nkeys = ['\u0661\u0662\u0663']\n", 2, "is not a key"),
        ("[owners.a]\nkeys = ['1_000']\n", 2, "is not a key"),
        ("[owners.a]\nkeys = ['0x10']\nmin_age = '\u0661m'\n", 3, "not a duration"),
        (
            "[owners.a]\nkeys = ['0x10']\nunit = 'billing.socket'\n",
            3,
            "a socket unit never has processes",
        ),
        (
            "[owners.a]\nkeys = ['0x10']\nunit = 'worker@.timer'\n",
            3,
            'unit = "worker@.service"',
        ),
        ("pid_namespace_complete = 'yes'\n", 1, "pid_namespace_complete: must be true or false"),
    ],
)
def test_each_policy_error_names_file_line_and_problem(
    tmp_path: Path, snippet: str, line: int, fragment: str
) -> None:
    path = write(tmp_path / "bad.toml", snippet)
    with pytest.raises(PolicyErrors) as info:
        load(path)
    text = str(info.value)
    assert f"{path}:{line}:" in text, text
    assert fragment in text, text


def test_every_error_is_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "[owners.a]\nkeys = ['0x20-0x10']\nunit = 'x'\n")
    with pytest.raises(PolicyErrors) as info:
        load(path)
    assert len(info.value.problems) == 2


def test_overlap_needs_a_shared_kind(tmp_path: Path) -> None:
    text = "[owners.a]\nkeys = ['0x10-0x20']\nkinds = ['shm']\n[owners.b]\nkeys = ['0x15']\nkinds = ['sem']\n"
    p = load(write(tmp_path / "p.toml", text))
    assert p.owner_of(obj(0x15, IpcKind.SEM)) is p.owner("b")
    assert p.owner_of(obj(0x15, IpcKind.SHM)) is p.owner("a")


def test_two_private_owners_of_one_uid_overlap(tmp_path: Path) -> None:
    text = "[owners.a]\nuid = 5\nprivate = true\n[owners.b]\nuid = 5\nprivate = true\n"
    with pytest.raises(PolicyErrors, match="IPC_PRIVATE of uid 5"):
        load(write(tmp_path / "p.toml", text))
    # cuid narrows: one owner without it claims what any creator made, so it still overlaps
    narrowed = text.replace("[owners.b]\n", "[owners.b]\ncuid = 0\n")
    with pytest.raises(PolicyErrors, match="IPC_PRIVATE of uid 5 created by uid 0"):
        load(write(tmp_path / "q.toml", narrowed))


def test_private_owners_of_one_uid_with_different_creators_are_disjoint(tmp_path: Path) -> None:
    """www-data's sets made by Apache's root parent, and php-fpm's own, made by www-data."""
    text = (
        "[owners.apache]\nuid = 33\ncuid = 0\nprivate = true\n"
        "[owners.fpm]\nuid = 33\ncuid = 33\nprivate = true\n"
    )
    p = load(write(tmp_path / "p.toml", text))
    assert p.owner_of(obj(0, IpcKind.SEM, uid=33, cuid=0)) is p.owner("apache")
    assert p.owner_of(obj(0, IpcKind.SEM, uid=33, cuid=33)) is p.owner("fpm")
    assert p.owner_of(obj(0, IpcKind.SEM, uid=33, cuid=1000)) is None


def test_cuid_claims_objects_created_by_another_user(tmp_path: Path) -> None:
    # Apache's `Mutex sysvsem`: created by root, handed to www-data with IPC_SET
    p = load(
        write(
            tmp_path / "p.toml", "[owners.a]\nuid = 33\ncuid = 0\nprivate = true\nkinds = ['sem']\n"
        )
    )
    assert p.owner_of(obj(0, IpcKind.SEM, uid=33, cuid=0)) is p.owner("a")
    assert p.owner_of(obj(0, IpcKind.SEM, uid=33, cuid=33)) is None  # cuid narrows
    with pytest.raises(PolicyErrors, match="cuid needs uid"):
        load(write(tmp_path / "q.toml", "[owners.a]\ncuid = 0\nkeys = ['0x10']\n"))


def test_uid_is_the_owner_uid_and_cuid_only_narrows(tmp_path: Path) -> None:
    """The issue's Apache policy: no cuid, and the root-made sets of www-data are claimed."""
    text = "[owners.apache]\nuid = 33\nprivate = true\nkinds = ['sem']\nkeys = ['0x10']\n"
    p = load(write(tmp_path / "p.toml", text))
    apache = p.owner("apache")
    for key in (0, 0x10):
        assert p.owner_of(obj(key, IpcKind.SEM, uid=33, cuid=0)) is apache
        assert p.owner_of(obj(key, IpcKind.SEM, uid=33, cuid=33)) is apache
        assert p.owner_of(obj(key, IpcKind.SEM, uid=0, cuid=33)) is None
    narrowed = load(write(tmp_path / "q.toml", text.replace("uid = 33", "uid = 33\ncuid = 0")))
    for key in (0, 0x10):
        assert narrowed.owner_of(obj(key, IpcKind.SEM, uid=33, cuid=0)) is narrowed.owners[0]
        assert narrowed.owner_of(obj(key, IpcKind.SEM, uid=33, cuid=33)) is None


def test_policy_check_says_whose_objects_uid_and_cuid_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "[owners.a]\nuid = 0\nkeys = ['0x10']\n"
        "[owners.b]\nuid = 0\ncuid = 0\nkeys = ['0x20']\n[owners.c]\nkeys = ['0x30']\n"
    )
    assert main(["policy", "check", str(write(tmp_path / "p.toml", text))]) == 0
    uids = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  uid:")]
    assert uids == [
        "  uid:   owner uid 0 (root), created by any user",
        "  uid:   owner uid 0 (root), created by uid 0 (root)",
        "  uid:   any",
    ]


def test_private_claims_key_zero_of_that_uid(tmp_path: Path) -> None:
    p = load(write(tmp_path / "p.toml", "[owners.a]\nuid = 5\nprivate = true\n"))
    assert p.owner_of(obj(0, uid=5)) is p.owner("a")
    assert p.owner_of(obj(0, uid=6)) is None
    assert p.owner_of(obj(0, uid=5, cuid=0)) is p.owner("a")  # whoever created it
    assert p.owner_of(obj(0, uid=0, cuid=5)) is None  # uid is the owner, not the creator


def test_ftok_matches_c_ftok(tmp_path: Path) -> None:
    libc = ctypes.CDLL(None)
    libc.ftok.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.ftok.restype = ctypes.c_int32
    files = [tmp_path / "artisan", Path("/etc/hostname"), Path("/"), Path("/usr/bin/env")]
    files[0].write_text("<?php")
    for f in files:
        for proj in (1, ord("a"), ord("Z"), 255):
            assert ftok(f, proj) == libc.ftok(str(f).encode(), proj) & 0xFFFFFFFF, (f, proj)


def test_ftok_entries_in_policy_and_missing_paths_warn(tmp_path: Path) -> None:
    app = write(tmp_path / "srv" / "artisan", "<?php")
    text = f"""
[owners.php]
ftok = [{{ path = "{app}", proj = "a" }}, {{ path = "/nonexistent/x", proj = "b" }}]
"""
    p = load(write(tmp_path / "p.toml", text))
    owner = p.owner("php")
    assert owner and owner.key_ranges == ((ftok(app, ord("a")),) * 2,)
    assert len(p.warnings) == 1 and "/nonexistent/x" in p.warnings[0] and "skipped" in p.warnings[0]


def test_search_order_and_override_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vendor, etc_file, etc_d = tmp_path / "usr.d", tmp_path / "policy.toml", tmp_path / "etc.d"
    write(
        vendor / "10-app.toml", "[owners.app]\nkeys = ['0x10']\n[owners.other]\nkeys = ['0x99']\n"
    )
    write(etc_file, "min_age = '1h'\n[owners.app]\nkeys = ['0x20']\n")
    write(etc_d / "50-app.toml", "[owners.app]\nkeys = ['0x30']\nmin_age = '5m'\n")
    monkeypatch.setattr(
        "ipcjanitor.policy.files.SEARCH_PATH", (str(vendor), str(etc_file), str(etc_d))
    )
    monkeypatch.delenv("IPCJANITOR_POLICY", raising=False)
    p = load_policy(strict_modes=False)
    app = p.owner("app")
    assert app and app.key_ranges == ((0x30, 0x30),) and p.grace(app) == 300
    other = p.owner("other")
    assert other and p.grace(other) == 3600
    assert len(p.sources) == 3


def test_env_and_directory_replace_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "d" / "a.toml", "[owners.a]\nkeys = ['0x10']\n")
    write(tmp_path / "d" / "b.toml", "[owners.b]\nkeys = ['0x11']\n")
    write(tmp_path / "d" / "ignored.conf", "garbage")
    monkeypatch.setenv("IPCJANITOR_POLICY", str(tmp_path / "d"))
    p = load_policy(strict_modes=False)
    assert [o.name for o in p.owners] == ["a", "b"]


def test_no_policy_files_means_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("ipcjanitor.policy.files.SEARCH_PATH", (str(tmp_path / "none.d"),))
    monkeypatch.delenv("IPCJANITOR_POLICY", raising=False)
    assert load_policy(strict_modes=False) is EMBEDDED_DEFAULT
    assert EMBEDDED_DEFAULT.owner_of(obj(0x10)) is None


def test_a_missing_explicit_policy_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyErrors, match="no such policy"):
        load(tmp_path / "nope.toml")


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root to chown")
def test_strict_modes_refuse_what_others_can_write(tmp_path: Path) -> None:
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    path = write(safe / "p.toml", "[owners.a]\nkeys = ['0x10']\n")
    assert load_policy(str(path), strict_modes=True).owner("a")
    path.chmod(0o666)
    with pytest.raises(PolicyErrors, match="writable by group or others"):
        load_policy(str(path), strict_modes=True)
    path.chmod(0o644)
    os.chown(path, 1000, 1000)
    with pytest.raises(PolicyErrors, match="owned by uid 1000"):
        load_policy(str(path), strict_modes=True)
    os.chown(path, 0, 0)
    safe.chmod(0o777)
    with pytest.raises(PolicyErrors, match="writable by group or others"):
        load_policy(str(safe), strict_modes=True)


def test_binary_and_huge_files_are_policy_errors(tmp_path: Path) -> None:
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PolicyErrors, match="not UTF-8"):
        load(binary)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("0", 0),
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        (45, 45),
    ],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "m", "5x", True, 1.5, "-3m", "infinity", "10s5m", "5min 5min", "3.", "1h 2 5"]
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_systemd_time_spans() -> None:
    """systemd.time(7): units spelled out, spaces, fractions; a bare number is seconds."""
    assert parse_duration("10min") == 600 and parse_duration("1h 30min") == 5400
    assert parse_duration("500ms") == 0.5 and parse_duration("1h 2") == 3602
    assert parse_duration("10") == 10 and parse_duration("2 days") == 172800
    with pytest.raises(ValueError, match=r"largest first.*'5min 10s'"):
        parse_duration("10s5m")


@given(st.integers(min_value=0, max_value=10**7))
def test_format_duration_round_trips_within_its_precision(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_unit_templates() -> None:
    assert unit_matches("worker@.service", "worker@3.service")
    assert unit_matches("worker@.service", "worker@a-b.service")
    assert not unit_matches("worker@.service", "worker.service")
    assert not unit_matches("worker@.service", "worker@3.socket")
    assert unit_matches("a.service", "a.service") and not unit_matches("a.service", "b.service")


keys32 = st.integers(min_value=1, max_value=0xFFFFFFFF)


@given(keys32, keys32, st.booleans())
def test_key_specs_round_trip(a: int, b: int, hexa: bool) -> None:
    low, high = min(a, b), max(a, b)
    fmt = (lambda k: f"0x{k:x}") if hexa else str
    assert parse_key_spec(f"{fmt(low)}-{fmt(high)}") == (low, high)
    assert parse_key_spec(fmt(low)) == (low, low)


@given(st.lists(st.tuples(keys32, st.integers(min_value=0, max_value=1000)), max_size=12), keys32)
def test_owner_of_agrees_with_brute_force(spans: list[tuple[int, int]], key: int) -> None:
    owners: list[Owner] = []
    taken: list[tuple[int, int]] = []
    for i, (low, width) in enumerate(spans):
        high = min(low + width, 0xFFFFFFFF)
        if any(low <= h and lo <= high for lo, h in taken):
            continue  # the loader rejects overlaps; build only valid policies
        taken.append((low, high))
        owners.append(Owner(name=f"o{i}", key_ranges=((low, high),)))
    p = Policy(owners=tuple(owners))
    expected = next((o for o in owners if o.key_ranges[0][0] <= key <= o.key_ranges[0][1]), None)
    assert p.owner_of(obj(key)) is expected


EXAMPLES = sorted((Path(__file__).parent.parent / "packaging" / "examples").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_are_valid(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    real = pwd.getpwnam

    def getpwnam(name: str):  # the example's users need not exist on the test machine
        try:
            return real(name)
        except KeyError:
            return real("nobody")

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    policy = load_policy(str(example), strict_modes=False)
    assert policy.owners and all(o.unit for o in policy.owners)
    assert example.read_text().startswith("# ")  # documented


def test_two_owners_with_the_same_single_key_are_an_overlap_not_a_crash(tmp_path: Path) -> None:
    # found by fuzzing: two ftok entries of one file gave two owners one key
    text = "[owners.a]\nkeys = ['0x10']\n[owners.b]\nkeys = ['0x10']\n"
    with pytest.raises(PolicyErrors, match="both claim"):
        load(write(tmp_path / "p.toml", text))


def test_the_model_decide_needs_imports_no_parser_and_no_loader() -> None:
    code = (
        "import sys, ipcjanitor.engine.decide, ipcjanitor.kernel.processes;"
        "print(sorted(m for m in sys.modules if m in "
        "('tomllib', 'ipcjanitor.policy.parse', 'ipcjanitor.policy.load')))"
    )
    # a bare environment: coverage's start-up hook (COVERAGE_PROCESS_*) reads pyproject with tomllib
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "suffix",
    [".socket", ".timer", ".slice", ".target", ".mount", ".path", ".swap", ".device", ".automount"],
)
def test_only_services_and_scopes_own_objects(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / "p.toml", f"[owners.a]\nkeys = ['0x10']\nunit = 'app{suffix}'\n")
    with pytest.raises(PolicyErrors, match=r'never has processes.*unit = "app\.service"'):
        load(path)


@pytest.mark.parametrize("unit", ["a.service", "a.scope", "worker@.service", "worker@3.service"])
def test_services_scopes_and_templates_are_owners(tmp_path: Path, unit: str) -> None:
    p = load(write(tmp_path / "p.toml", f"[owners.a]\nkeys = ['0x10']\nunit = '{unit}'\n"))
    assert p.owners[0].unit == unit


@pytest.mark.parametrize(("uid", "expected"), [("0", 0), ("4294967294", 2**32 - 2), (65534, 65534)])
def test_uids_at_the_ends_of_the_range(tmp_path: Path, uid: object, expected: int) -> None:
    value = f"'{uid}'" if isinstance(uid, str) else str(uid)
    p = load(write(tmp_path / "p.toml", f"[owners.a]\nkeys = ['0x10']\nuid = {value}\n"))
    assert p.owners[0].uid == expected


@pytest.mark.parametrize("setting", ["min_age = '5m'", "pid_namespace_complete = true"])
def test_a_top_level_setting_in_two_files_names_both(tmp_path: Path, setting: str) -> None:
    write(tmp_path / "10-a.toml", f"{setting}\n[owners.a]\nkeys = ['0x10']\n")
    write(tmp_path / "20-b.toml", f"# b\n\n{setting}\n[owners.b]\nkeys = ['0x20']\n")
    with pytest.raises(PolicyErrors) as info:
        load(tmp_path)
    name = setting.split(maxsplit=1)[0]
    assert str(info.value) == (
        f"{tmp_path}/20-b.toml:3: {name} is also set in {tmp_path}/10-a.toml:1: "
        "set it in one file only"
    )


def test_pid_namespace_complete_defaults_to_false_and_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = write(tmp_path / "a" / "p.toml", "[owners.a]\nkeys = ['0x10']\n")
    assert load(plain).pid_namespace_complete is False
    stated = write(tmp_path / "b" / "p.toml", "pid_namespace_complete = true\n")
    assert load(stated).pid_namespace_complete is True
    assert main(["policy", "check", str(stated)]) == 0
    assert "pid_namespace_complete: true" in capsys.readouterr().out


def test_recursion_in_the_parser_is_a_policy_error_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the depth pre-scan miss a nesting, the parser's RecursionError still is one."""
    monkeypatch.setattr("ipcjanitor.policy.parse.MAX_NESTING", 10**6)
    path = write(tmp_path / "p.toml", "\n\nx = " + "[" * 3000 + "]" * 3000)
    with pytest.raises(PolicyErrors, match=f"{path}:3: .*nesting deeper than the format needs"):
        load(path)


UNITLESS = """
[owners.bound]
unit = "a.service"
keys = ["0x7fff0010"]

[owners.legacy]
keys = ["0x7fff0020"]
"""


def test_policy_check_warns_once_per_owner_without_a_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "p.toml", UNITLESS)
    assert main(["policy", "check", str(path)]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "has no unit" in line]
    assert warnings == [
        f"warning: owner legacy ({path}:6) has no unit: only the pids the kernel recorded "
        "and idle time prove its objects dead, and they miss a live process that holds one "
        "without a trace (a semaphore set's holder that has not operated on it yet, a thread "
        'id recorded instead of its process); bind it to its service: unit = "NAME.service"'
    ]


@pytest.mark.parametrize("command", [["scan"], ["clean", "--dry-run"]])
def test_scan_and_clean_warn_about_owners_without_a_unit_when_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Read-only here (scan, clean --dry-run): the policy's keys are nobody's on this host."""
    path = write(tmp_path / "p.toml", UNITLESS)
    assert main(["--policy", str(path), "-q", *command]) == 0
    assert "has no unit" not in capsys.readouterr().err
    assert main(["--policy", str(path), "-v", *command]) == 0
    err = capsys.readouterr().err
    assert err.count("has no unit") == 1 and "owner legacy" in err


def test_the_apache_example_claims_the_sets_root_makes_for_www_data() -> None:
    import pwd

    example = next(e for e in EXAMPLES if e.name == "apache-mutex-sysvsem.toml")
    policy = load_policy(str(example), strict_modes=False)
    www = pwd.getpwnam("www-data").pw_uid
    apache = policy.owner("apache")
    assert apache and apache.unit == "apache2.service" and apache.cuid is None
    assert policy.owner_of(obj(0, IpcKind.SEM, uid=www, cuid=0)) is apache
    assert policy.owner_of(obj(0, IpcKind.SHM, uid=www, cuid=0)) is None
    assert policy.owner_of(obj(0, IpcKind.SEM, uid=0, cuid=www)) is None


@pytest.mark.parametrize(
    ("pattern", "unit", "matches"),
    [
        ("worker@.service", "worker@2.service", True),
        ("worker@.service", "worker@1.blue.service", True),  # instance "1.blue"
        ("worker@.service", "worker@.service", True),  # itself (install-hook of a template)
        ("worker@.service", "worker@2.scope", False),
        ("worker@.service", "worker.service", False),
        ("worker.service", "worker.service", True),
        # not templates, as systemd reads them: the first "@" starts the instance
        ("app@blue@.service", "app@blue@1.service", False),  # found by attacking the hook
        ("app@blue@.service", "app@blue@.service", True),
        ("app@.blue.service", "app@1.blue.service", False),
        ("app@.blue.service", "app@.blue.service", True),
    ],
)
def test_templates_match_as_systemd_reads_them(pattern: str, unit: str, matches: bool) -> None:
    from ipcjanitor.unitnames import unit_matches

    assert unit_matches(pattern, unit) is matches


unit_chars = st.sampled_from(list("ab1@.-_"))


@given(st.text(unit_chars, min_size=1, max_size=8), st.text(unit_chars, min_size=1, max_size=8),
       st.sampled_from(["service", "scope"]))  # fmt: skip
def test_a_pattern_binds_a_unit_only_as_its_name_or_its_template(
    stem: str, other: str, kind: str
) -> None:
    """What the hook's fast path relies on: it looks for exactly these two names."""
    from ipcjanitor.unitnames import unit_matches

    for pattern in (f"{stem}.{kind}", f"{stem}@.{kind}", f"{other}@.{kind}"):
        for unit in (f"{stem}.{kind}", f"{other}.{kind}", f"{stem}@{other}.{kind}"):
            if unit_matches(pattern, unit):
                name, _, unit_kind = unit.rpartition(".")
                template = f"{name.partition('@')[0]}@.{unit_kind}"
                assert pattern in (unit, template), (pattern, unit)


def test_policy_errors_are_listed_by_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text('[owners.b]\nkeys = ["0x10"]\nzz = 1\nyy = 2\n')
    (tmp_path / "a.toml").write_text('[owners.a]\nkeys = ["0x20"]\n\n\n\nqq = 1\n')
    with pytest.raises(PolicyErrors) as err:
        load(tmp_path)
    where = [(p.path, p.line) for p in err.value.problems]
    assert where == sorted(where, key=lambda w: (w[0] or "", w[1] or 0)) and len(where) == 3
    assert str(err.value).splitlines()[0].startswith(f"{tmp_path / 'a.toml'}:6:")


def test_a_unitless_owner_under_the_floor_is_warned_of(tmp_path: Path) -> None:
    from ipcjanitor.policy.model import UNITLESS_MIN_AGE_FLOOR, handoff_warnings

    text = (
        '[owners.fast]\nkeys = ["0x10"]\nmin_age = "0s"\n'
        '[owners.slow]\nkeys = ["0x11"]\nmin_age = "5min"\n'
        '[owners.bound]\nunit = "a.service"\nkeys = ["0x12"]\nmin_age = "0s"\n'
        '[owners.default]\nkeys = ["0x13"]\n'
    )
    warned = handoff_warnings(load(write(tmp_path / "p.toml", text)))
    assert len(warned) == 1 and warned[0].startswith("owner fast (") and "min_age 0:" in warned[0]
    assert "17 s for IPC::Shareable" in warned[0] and 'min_age = "5min"' in warned[0]
    assert UNITLESS_MIN_AGE_FLOOR == 300


def test_no_shipped_policy_has_a_unitless_owner_under_the_floor() -> None:
    """Read as TOML (the examples name users this host may not have): every owner without a
    unit has a min_age at or over the floor, its own or the file's, or the default."""
    import tomllib

    from ipcjanitor.policy.model import DEFAULT_MIN_AGE, UNITLESS_MIN_AGE_FLOOR

    shipped = Path(__file__).parent.parent / "packaging"
    files = [shipped / "policy.toml", *sorted((shipped / "examples").glob("*.toml"))]
    owners = 0
    for f in files:
        doc = tomllib.loads(f.read_text())
        default = parse_duration(doc.get("min_age", DEFAULT_MIN_AGE))
        for name, owner in doc.get("owners", {}).items():
            owners += 1
            grace = parse_duration(owner.get("min_age", default))
            assert "unit" in owner or grace >= UNITLESS_MIN_AGE_FLOOR, f"{f}: {name}"
    assert len(files) >= 5 and owners >= 4


def test_the_postgresql_examples_template_owner_is_valid_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """packaging/examples/postgresql.toml ships its several-clusters owner commented out (it
    claims what the 15-main owner claims): uncommented, instead of that one, it loads."""
    import pwd

    monkeypatch.setattr(pwd, "getpwnam", lambda name: pwd.getpwuid(os.getuid()))
    text = (Path(__file__).parent.parent / "packaging/examples/postgresql.toml").read_text()
    block = text[text.index("#   [owners.postgresql]") :].splitlines()
    owner = "\n".join(ln[4:] for ln in block if ln.startswith("#   ") and "install-hook" not in ln)
    policy = load(write(tmp_path / "pg.toml", owner))
    (o,) = policy.owners
    assert (o.name, o.unit, o.names) == ("postgresql", "postgresql@.service", ("PostgreSQL.*",))
    assert len(o.key_ranges) == 2 and o.min_age == 0

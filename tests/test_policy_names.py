"""`names = [...]` in the policy: parsing, refusals with file and line, ownership, overlaps."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipcjanitor.cli import main
from ipcjanitor.errors import PolicyErrors
from ipcjanitor.model import IpcKind, PosixKind, PosixObject
from ipcjanitor.policy.load import load_policy
from ipcjanitor.policy.model import Policy


def load(tmp: Path, text: str) -> Policy:
    path = tmp / "policy.toml"
    path.write_text(text)
    return load_policy(str(path), strict_modes=False)


def problems(tmp: Path, text: str) -> list[str]:
    with pytest.raises(PolicyErrors) as exc:
        load(tmp, text)
    return [p.located() for p in exc.value.problems]


def pobj(name: str, kind: PosixKind = PosixKind.SHM, uid: int = 0) -> PosixObject:
    return PosixObject(kind, name, 1, 2, uid, 0, 0o100600, 0, 1, 0, 0, 0, (("", 1, 1),), name)


def test_names_claim_posix_kinds_by_default(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
[owners.pg]
unit = "postgresql.service"
names = ["PostgreSQL.*"]
min_age = "1m"
""",
    )
    pg = p.owner("pg")
    assert pg is not None
    assert pg.names == ("PostgreSQL.*",) and pg.posix_kinds == frozenset(PosixKind)
    assert p.name_owners(pobj("PostgreSQL.1804289383")) == (pg,)
    assert p.name_owners(pobj("PostgreSQL.1", PosixKind.SEM)) == (pg,)
    assert p.name_owners(pobj("psm_1")) == ()
    assert p.claims_posix(PosixKind.MQ)


def test_kinds_and_uid_narrow(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
[owners.py]
names = ["psm_*"]
kinds = ["posix-shm"]
uid = 33
[owners.both]
keys = ["0x10"]
names = ["jack_sem.*"]
kinds = ["shm", "posix-sem"]
""",
    )
    py, both = p.owner("py"), p.owner("both")
    assert py is not None and both is not None
    assert p.name_owners(pobj("psm_1", uid=33)) == (py,)
    assert p.name_owners(pobj("psm_1", uid=34)) == ()
    assert p.name_owners(pobj("psm_1", PosixKind.SEM, uid=33)) == ()
    assert both.kinds == frozenset({IpcKind.SHM}) and both.posix_kinds == {PosixKind.SEM}
    assert p.name_owners(pobj("jack_sem.0", PosixKind.SEM)) == (both,)


@pytest.mark.parametrize(
    ("names", "extra", "line", "problem"),
    [
        ('[""]', "", 3, "empty pattern"),
        ('["/psm_*"]', "", 3, "is absolute"),
        ('["a/../b"]', "", 3, "'..' component"),
        ('["*"]', "", 3, "matches every name"),
        ('["psm\\u0000*"]', "", 3, "NUL or control"),
        ('["psm\\n*"]', "", 3, "NUL or control"),
        ("[]", "", 3, "must not be empty"),
        ('"psm_*"', "", 3, "must be a list"),
        ("[3]", "", 3, "is not a pattern"),
        ('["psm_*"]', 'kinds = ["shm"]', 4, "names claim nothing"),
        ('["psm_*"]', 'kinds = ["posix-sum"]', 4, '"posix-shm"'),
    ],
)
def test_refusals_name_file_and_line(
    tmp_path: Path, names: str, extra: str, line: int, problem: str
) -> None:
    found = problems(tmp_path, f"\n[owners.x]\nnames = {names}\n{extra}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'policy.toml'}:{line}: [owners.x] ")
    assert problem in found[0]


def test_posix_kinds_without_names_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, '[owners.x]\nkeys = ["0x10"]\nkinds = ["posix-mq"]\n')
    assert "kinds posix-mq need names" in found[0] and ":3:" in found[0]


def test_match_everything_is_allowed_with_uid(tmp_path: Path) -> None:
    p = load(tmp_path, '[owners.x]\nnames = ["*"]\nuid = 1234\n')
    assert p.name_owners(pobj("anything", uid=1234))


def test_a_policy_error_is_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[owners.x]\nnames = ["/dev/shm/psm_*"]\n')
    assert main(["--policy", str(path), "policy", "check"]) == 78
    assert "is absolute" in capsys.readouterr().err


def test_overlapping_owners_are_reported_with_an_example_name(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
[owners.a]
names = ["psm_*"]
[owners.b]
names = ["PostgreSQL.*", "*_cache"]
[owners.c]
names = ["PostgreSQL.*"]
uid = 5
[owners.d]
names = ["x*"]
kinds = ["posix-mq"]
[owners.e]
names = ["x*"]
kinds = ["posix-shm"]
""",
    )
    found = [w for w in p.warnings if "can both claim" in w]
    assert found[0] == (
        f"owners a ({tmp_path}/policy.toml:2) and b ({tmp_path}/policy.toml:4) can both claim "
        "posix-shm/posix-sem/posix-mq name 'psm_cache' (patterns 'psm_*' and '*_cache'): an "
        "object both claim is unowned and never removed; make the patterns disjoint"
    )
    # c's uid narrows, not separates: b claims every uid; d and e share no kind; a, d: none
    pairs = [(w.split()[1], w.split()[4], w.split(" name ")[0].rsplit(" ", 1)[1]) for w in found]
    assert pairs == [
        ("a", "b", "posix-shm/posix-sem/posix-mq"),
        ("b", "c", "posix-shm/posix-sem/posix-mq"),
        ("b", "d", "posix-mq"),
        ("b", "e", "posix-shm"),
    ]
    assert "name 'PostgreSQL.'" in found[1] and "name 'x_cache'" in found[2]
    both = p.name_owners(pobj("psm_cache"))
    assert [o.name for o in both] == ["a", "b"]


def test_policy_check_prints_names_and_the_overlap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[owners.a]\nnames = ["psm_*"]\n[owners.b]\nnames = ["*_x"]\n')
    main(["--policy", str(path), "policy", "check"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "names: psm_*" in text and "kinds: posix-shm, posix-sem, posix-mq" in text
    assert "name 'psm_x'" in text

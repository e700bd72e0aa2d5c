"""Safe policy path resolution (chase.py): each rule of the walk, as root and not."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ipcjanitor.chase import (
    MAX_HOPS,
    Refused,
    check_executable,
    open_directory,
    read_policy,
    write_file_at,
)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root to chown")
NOBODY = 65534
MiB = 2**20


def read(path: Path | str, strict: bool = True, want_dir: bool | None = None) -> list[str]:
    """The files read (as named) and their text; a refused entry as 'REFUSED: problem'."""
    out = []
    for shown, data in read_policy(str(path), strict, MiB, ".toml", want_dir):
        text = f"REFUSED: {data.problem}" if isinstance(data, Refused) else data.decode()
        out.append(f"{Path(shown).name}={text}")
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """etc/ with a.toml; real/ with b.toml; everything root's and 0755/0644."""
    for d in ("etc", "real"):
        (tmp_path / d).mkdir(mode=0o755)
    (tmp_path / "etc" / "a.toml").write_text("A")
    (tmp_path / "real" / "b.toml").write_text("B")
    return tmp_path


def test_relative_paths_and_dot_dot_resolve_like_the_kernel(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree / "real")
    assert read("b.toml") == ["b.toml=B"]
    assert read("../etc/./a.toml") == ["a.toml=A"]
    assert read(tree / "real" / ".." / ".." / tree.name / "etc" / "a.toml") == ["a.toml=A"]
    assert read("/../../" + str(tree / "etc" / "a.toml")) == ["a.toml=A"]  # / has no parent


def test_symlinks_absolute_relative_and_chained_are_followed(tree: Path) -> None:
    (tree / "etc" / "abs").symlink_to(tree / "real")
    (tree / "etc" / "rel").symlink_to("../real")
    (tree / "etc" / "chain").symlink_to("rel/b.toml")
    assert read(tree / "etc" / "abs" / "b.toml") == ["b.toml=B"]
    assert read(tree / "etc" / "rel" / "b.toml") == ["b.toml=B"]
    assert read(tree / "etc" / "chain") == ["chain=B"]
    # an entry of a policy directory that is a symlink is walked the same way
    (tree / "etc" / "z.toml").symlink_to("../real/b.toml")
    assert read(tree / "etc") == ["a.toml=A", "z.toml=B"]


def test_the_hop_limit(tree: Path) -> None:
    target = "real/b.toml"
    for i in range(MAX_HOPS):
        (tree / f"l{i}").symlink_to(target)
        target = f"l{i}"
    assert read(tree / f"l{MAX_HOPS - 1}") == [f"l{MAX_HOPS - 1}=B"]
    (tree / "one-more").symlink_to(f"l{MAX_HOPS - 1}")
    with pytest.raises(Refused, match="too many levels of symbolic links"):
        read(tree / "one-more")


def test_what_is_not_there_or_not_a_directory(tree: Path) -> None:
    with pytest.raises(Refused) as info:
        read(tree / "etc" / "none.toml")
    assert info.value.missing
    with pytest.raises(Refused, match="is not a directory"):
        read(tree / "etc" / "a.toml" / "x")
    with pytest.raises(Refused, match="is not a directory"):
        read(tree / "etc" / "a.toml", want_dir=True)
    with pytest.raises(Refused, match="is a directory, not a policy file"):
        read(tree / "etc", want_dir=False)
    (tree / "etc" / "gone.toml").symlink_to("nowhere.toml")
    assert (
        read(tree / "etc")[1]
        == f"gone.toml=REFUSED: no such file or directory: {tree}/etc/nowhere.toml"
    )


@as_root
def test_a_sticky_directory_is_accepted_above_but_not_as_the_files_own(tree: Path) -> None:
    sticky = tree / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "link").symlink_to(tree / "real")  # root's link: others cannot replace it
    assert read(sticky / "link" / "b.toml") == ["b.toml=B"]
    (sticky / "c.toml").write_text("C")
    with pytest.raises(Refused, match=f"directory {sticky} is writable by group or others"):
        read(sticky / "c.toml")
    with pytest.raises(Refused, match=f"directory {sticky} is writable by group or others"):
        read(sticky, want_dir=True)  # others could add entries
    os.lchown(sticky / "link", NOBODY, NOBODY)
    with pytest.raises(Refused, match=f"symlink {sticky}/link is owned by uid {NOBODY}"):
        read(sticky / "link" / "b.toml")
    assert read(sticky / "link" / "b.toml", strict=False) == ["b.toml=B"]


@as_root
def test_each_entry_of_a_directory_is_checked(tree: Path) -> None:
    (tree / "etc" / "b.toml").write_text("B")
    os.chown(tree / "etc" / "b.toml", NOBODY, NOBODY)
    assert read(tree / "etc") == [
        "a.toml=A",
        f"b.toml=REFUSED: file {tree}/etc/b.toml is owned by uid {NOBODY}, not root; as root "
        f"ipcjanitor only reads policy that only root can change (chown root {tree}/etc/b.toml)",
    ]


def test_a_file_replaced_between_its_check_and_its_read_is_refused(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def replace_then_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if path == "b.toml" and not flags & os.O_PATH:
            (tree / "real" / "new").write_text("NEW")
            os.rename(tree / "real" / "new", tree / "real" / "b.toml")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", replace_then_open)
    with pytest.raises(Refused, match="was replaced while it was being read"):
        read(tree / "real" / "b.toml")


def test_size_limit(tree: Path) -> None:
    (tree / "real" / "big.toml").write_bytes(b"#" * (MiB + 1))
    with pytest.raises(Refused, match="larger than 1 MiB"):
        read(tree / "real" / "big.toml")
    (tree / "real" / "big.toml").write_bytes(b"#" * MiB)
    assert len(read(tree / "real" / "big.toml")[0]) == len("big.toml=") + MiB


def test_no_descriptor_is_left_open(tree: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    read(tree / "etc")
    with pytest.raises(Refused):
        read(tree / "etc" / "a.toml" / "x")
    assert set(os.listdir("/proc/self/fd")) == before


def test_any_os_error_on_the_way_is_a_refusal(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never an OSError escaping (exit 1, or a traceback from the hook's fast path)."""
    gone = tree / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # getcwd() now fails with ENOENT
    assert read(tree / "etc" / "a.toml") == ["a.toml=A"]  # an absolute path needs no cwd
    with pytest.raises(Refused, match="cannot read"):
        read("a.toml")

    def failing_listdir(fd: int) -> list[str]:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "listdir", failing_listdir)
    with pytest.raises(Refused, match="cannot read: Input/output error"):
        read(tree / "etc")


# -- the three uses beyond reading policy: one walk, the same rules ----------------------------


def _read(p: Path) -> None:
    read_policy(str(p), True, 2**20, ".toml", None)


def _run(p: Path) -> None:
    check_executable(str(p))


def _write_in(p: Path) -> None:
    os.close(open_directory(str(p), True, others_above=False)[0])


_USES: dict[str, Callable[[Path], None]] = {
    "policy": _read,
    "executable": _run,
    "directory": _write_in,
}


@pytest.mark.skipif(os.geteuid() != 0, reason="chowns entries to another user")
@pytest.mark.parametrize("use", sorted(_USES))
def test_every_use_refuses_what_another_user_controls_on_the_way(tmp_path: Path, use: str) -> None:
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    target = root / "d" / ("x" if use == "directory" else "f.toml")
    if use == "directory":
        target.mkdir()
    else:
        target.write_text("")
        target.chmod(0o755)
    _USES[use](target)  # root's all the way: accepted
    (tmp_path / "link").symlink_to(root)
    _USES[use](tmp_path / "link" / target.relative_to(root))  # root's symlink: followed
    os.lchown(tmp_path / "link", 65534, 65534)
    with pytest.raises(Refused, match=r"symlink .*link is owned by uid 65534"):
        _USES[use](tmp_path / "link" / target.relative_to(root))
    os.chown(root / "d", 65534, 65534)
    with pytest.raises(Refused, match=r"d is owned by uid 65534"):
        _USES[use](target)
    os.chown(root / "d", 0, 0)
    (root / "d").chmod(0o777)
    with pytest.raises(Refused, match="writable by group or others"):
        _USES[use](target)


def test_open_directory_makes_what_is_missing_with_its_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        fd, real = open_directory(str(tmp_path / "a" / "b"), True, others_above=False,
                                  create_mode=0o755)  # fmt: skip
    finally:
        os.umask(old)
    os.close(fd)
    assert real == str(tmp_path / "a" / "b")
    assert [oct(os.stat(tmp_path / p).st_mode & 0o7777) for p in ("a", "a/b")] == ["0o755"] * 2
    with pytest.raises(Refused, match="no such file"):
        open_directory(str(tmp_path / "c"), True)  # without create_mode nothing is made
    assert not (tmp_path / "c").exists()


def test_write_file_at_replaces_or_never_overwrites(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        write_file_at(fd, "f", b"one", 0o640, replace=False)
        with pytest.raises(FileExistsError):
            write_file_at(fd, "f", b"two", 0o640, replace=False)
        assert (tmp_path / "f").read_bytes() == b"one"
        write_file_at(fd, "f", b"three", 0o600, replace=True)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"three"
    assert oct((tmp_path / "f").stat().st_mode & 0o7777) == "0o600"
    assert os.listdir(tmp_path) == ["f"]

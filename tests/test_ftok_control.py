"""An ftok path another user controls must not choose what root claims.

Found by attacking the engine: a deploy user owning the application's directory replaced the
ftok file with a symlink to another user's file, and root's clean claimed (and removed) that
user's live segment. As root, an ftok key is claimed only when root alone controls the path,
or the one user who does is the owner's uid (then only objects that user owns are claimed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.errors import PolicyErrors
from ipcjanitor.policy.load import load_policy
from ipcjanitor.policy.parse import ftok

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root to chown")
NOBODY, OTHER = 65534, 65533


def setup(tmp_path: Path, uid_line: str = "", owner: int | None = NOBODY) -> tuple[Path, Path]:
    """A root-only policy directory, and an app directory owned by `owner`."""
    tmp_path.chmod(0o755)
    policies = tmp_path / "policy.d"
    policies.mkdir(mode=0o755)
    app = tmp_path / "app"
    app.mkdir(mode=0o755)
    (app / "artisan").write_text("<?php\n")
    if owner is not None:
        os.chown(app, owner, owner)
    (policies / "app.toml").write_text(
        f'[owners.app]\nunit = "app.service"\n{uid_line}'
        f'ftok = [{{ path = "{app}/artisan", proj = "v" }}]\n'
    )
    return policies, app


def test_a_path_a_user_controls_is_not_claimed_for_another(tmp_path: Path) -> None:
    policies, app = setup(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("")
    os.chown(victim, OTHER, OTHER)
    (app / "artisan").unlink()
    (app / "artisan").symlink_to(victim)  # what the user owning app/ can do
    os.lchown(app / "artisan", NOBODY, NOBODY)
    policy = load_policy(str(policies), strict_modes=True)
    assert policy.owner("app") is not None and policy.owner("app").key_ranges == ()  # type: ignore[union-attr]
    (warning,) = policy.warnings
    assert f"ftok path {app}/artisan can be replaced by uid {NOBODY}" in warning
    assert f"set uid = {NOBODY}" in warning
    # the same policy read by a non-root run claims it (no privilege to gain there)
    assert load_policy(str(policies), strict_modes=False).owner("app").key_ranges == (  # type: ignore[union-attr]
        (ftok(victim, ord("v")),) * 2,
    )


def test_the_controlling_user_as_uid_claims_only_its_own(tmp_path: Path) -> None:
    policies, app = setup(tmp_path, f"uid = {NOBODY}\n")
    policy = load_policy(str(policies), strict_modes=True)
    key = ftok(app / "artisan", ord("v"))
    assert policy.owner("app").key_ranges == ((key, key),) and policy.warnings == ()  # type: ignore[union-attr]
    (tmp_path / "again").mkdir()
    policies, _ = setup(tmp_path / "again", f"uid = {OTHER}\n")
    assert load_policy(str(policies), strict_modes=True).owner("app").key_ranges == ()  # type: ignore[union-attr]


def test_a_root_only_path_is_claimed(tmp_path: Path) -> None:
    policies, app = setup(tmp_path, owner=None)
    key = ftok(app / "artisan", ord("v"))
    policy = load_policy(str(policies), strict_modes=True)
    assert policy.owner("app").key_ranges == ((key, key),) and policy.warnings == ()  # type: ignore[union-attr]


def test_a_directory_anyone_may_write_is_refused(tmp_path: Path) -> None:
    policies, app = setup(tmp_path, f"uid = {NOBODY}\n", owner=None)
    app.chmod(0o775)  # group-writable, not sticky
    policy = load_policy(str(policies), strict_modes=True)
    (warning,) = policy.warnings
    assert "is writable by group or others, so any user could choose the key" in warning
    assert policy.owner("app").key_ranges == ()  # type: ignore[union-attr]


def test_in_a_sticky_directory_the_entrys_owner_controls_it(tmp_path: Path) -> None:
    policies, app = setup(tmp_path, owner=None)
    app.chmod(0o1777)
    os.chown(app / "artisan", NOBODY, NOBODY)
    policy = load_policy(str(policies), strict_modes=True)
    assert policy.owner("app").key_ranges == ()  # type: ignore[union-attr]
    assert f"can be replaced by uid {NOBODY}" in policy.warnings[0]


def test_a_user_steering_a_key_into_another_owners_cannot_stop_the_janitor(
    tmp_path: Path,
) -> None:
    """Found by attacking: with uid = the user who controls the path (allowed), that user
    pointed it at billing's key; the clash was a policy error, so every clean and hook stopped
    (exit 78) until root noticed. Now the steered entry is skipped with a warning."""
    policies, app = setup(tmp_path, f"uid = {NOBODY}\n")
    billing = tmp_path / "billing"
    billing.write_text("")
    key = ftok(billing, ord("v"))
    (policies / "billing.toml").write_text(f'[owners.billing]\nkeys = ["0x{key:08x}"]\n')
    (app / "artisan").unlink()
    (app / "artisan").symlink_to(billing)
    os.lchown(app / "artisan", NOBODY, NOBODY)
    policy = load_policy(str(policies), strict_modes=True)
    assert policy.owner("billing").key_ranges == ((key, key),)  # type: ignore[union-attr]
    assert policy.owner("app").key_ranges == ()  # type: ignore[union-attr]
    (warning,) = policy.warnings
    assert f"key 0x{key:08x} comes from an ftok path uid {NOBODY} controls" in warning
    # a clash root wrote itself (both paths root's) stays a policy error
    (app / "artisan").unlink()
    os.chown(app, 0, 0)
    (app / "artisan").symlink_to(billing)
    with pytest.raises(PolicyErrors, match="both claim"):
        load_policy(str(policies), strict_modes=True)

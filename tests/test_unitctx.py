"""What of a unit's configuration reaches its hook's file-system view (unitctx, pure parts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ipcjanitor.commands.doctor import missing_hooks
from ipcjanitor.errors import NotPermittedError, UsageError
from ipcjanitor.hook import install as hook
from ipcjanitor.policy.model import Owner, Policy
from ipcjanitor.systemd import unitctx

SHOW = """\
RootDirectory=
RootImage=
ExtensionDirectories=
ExtensionImages=
MountImages=
BindPaths=
BindReadOnlyPaths=-/a:/b:rbind /c:/c:rbind
TemporaryFileSystem=
RootDirectoryStartOnly=no
LoadState=loaded
NeedDaemonReload=no
LogNamespace=
"""


def test_a_set_option_is_a_problem_naming_it_and_what_to_do() -> None:
    view = unitctx.parse_show("a.service", SHOW)
    assert view.options == {"BindReadOnlyPaths": "-/a:/b:rbind /c:/c:rbind"}
    (problem,) = view.problems()
    assert problem.startswith("BindReadOnlyPaths=-/a:/b:rbind /c:/c:rbind ")
    assert "ExecStopPost=" in problem and "remove it" in problem


@pytest.mark.parametrize("option", sorted(unitctx.FILE_SYSTEM_OPTIONS))
def test_each_option_alone_is_a_problem(option: str) -> None:
    view = unitctx.parse_show("a.service", f"LoadState=loaded\n{option}=/srv/x\n")
    assert [p.split(" ")[0] for p in view.problems()] == [f"{option}=/srv/x"]


def test_root_directory_start_only_leaves_only_the_mounts() -> None:
    text = "RootDirectory=/srv/r\nRootImage=/i.raw\nBindPaths=/x:/y\nRootDirectoryStartOnly=yes\n"
    assert list(unitctx.parse_show("a.service", text).options) == ["BindPaths"]


def test_a_template_is_asked_about_through_an_instance(tmp_path: Path) -> None:
    assert unitctx.asked_name("w@.service") == "w@ipcjanitor-check.service"
    assert unitctx.asked_name("w@3.service") == "w@3.service"
    for d in ("w@3.service.d", "w@.service.d", "wx@1.service.d", "w@4.socket.d", "w@5.service"):
        (tmp_path / d).mkdir()
    assert unitctx.instance_names("w@.service", [tmp_path]) == ["w@3.service"]


def _reader(views: dict[str, str]) -> unitctx.Reader:
    return lambda unit: (unitctx.parse_show(unit, views[unit]), None)


def test_install_hook_refuses_with_every_problem_and_writes_nothing() -> None:
    with pytest.raises(NotPermittedError) as err:
        hook.check_context("a.service", _reader({"a.service": SHOW + "RootDirectory=/srv/r\n"}))
    assert "RootDirectory=/srv/r" in str(err.value) and "BindReadOnlyPaths=" in str(err.value)
    assert err.value.exit_code == 77 and "no drop-in was written" in str(err.value)


def test_install_hook_refuses_without_an_answer_and_a_unit_not_loaded() -> None:
    with pytest.raises(NotPermittedError, match="cannot ask systemd"):
        hook.check_context("a.service", lambda unit: (None, "no bus"))
    with pytest.raises(UsageError, match="LoadState=not-found"):
        hook.check_context("a.service", _reader({"a.service": "LoadState=not-found\n"}))


def test_doctor_reports_a_hooked_unit_whose_view_changes(tmp_path: Path) -> None:
    policy = Policy(owners=(Owner(name="a", key_ranges=((1, 1),), unit="a.service"),))
    dropin = tmp_path / "a.service.d" / "ipcjanitor.conf"
    dropin.parent.mkdir()
    dropin.write_text(hook.dropin_text("/x/ipcjanitor-hook /usr/bin/ipcjanitor hook --unit=%n"))
    (row,) = missing_hooks(policy, [tmp_path], _reader({"a.service": SHOW}))
    assert "BindReadOnlyPaths=" in row["problem"] and "--remove a.service" in row["fix"]
    (row,) = missing_hooks(policy, [tmp_path], lambda unit: (None, "no bus"))
    assert "problem" not in row and "no bus" in row["note"]


def test_systemctl_that_ignores_the_command_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # systemctl in a chroot (or with no systemd) exits 0 with an empty answer: not "not loaded"
    def ignoring(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            args, 0, "", "Running in chroot, ignoring command 'show'\n"
        )

    monkeypatch.setattr(subprocess, "run", ignoring)
    view, why = unitctx.read("a.service")
    assert view is None and why is not None and "ignoring command" in why
    with pytest.raises(NotPermittedError, match=r"cannot ask systemd.*ignoring command"):
        hook.check_context("a.service")

"""The hook runs in the hooked unit's file-system view: install-hook refuses what changes it.

`ExecStopPost=-+` drops User= and the sandboxing, but under systemd 252 RootDirectory=,
BindPaths=, BindReadOnlyPaths=, TemporaryFileSystem=, ExtensionDirectories= (and the image
options) still make the command's mount namespace. A `User=nobody` service whose tree holds
a fake at the hook's absolute path would have it run as uid 0 at every stop. Each fake leaves
a marker named by the euid that ran it: `fake.0` is root running nobody's file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ipcjanitor.hook.install import TRAMPOLINE

from .conftest import VENV_BIN
from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

# static: it runs inside a root tree that has no libc; "serve" keeps a service's main process
FAKE_C = """\
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char path[128];
    if (argc > 1 && strcmp(argv[1], "serve") == 0)
        for (;;) pause();
    snprintf(path, sizeof path, MARKS "/fake.%d", (int)geteuid());
    close(open(path, O_WRONLY | O_CREAT, 0644));
    return 0;
}
"""
APPROOT = "/srv/approot"  # RootDirectory=: nobody's tree
APPTOOLS = "/run/apptools"  # bound over /usr/local/bin: nobody's directory
APPEXT = "/srv/appext"  # ExtensionDirectories=: nobody's /usr/local/bin/ipcjanitor
MARKS = "/run/marks"

UNITS = {
    "rootdir": f"RootDirectory={APPROOT}\nExecStart=/bin/fake serve",
    "bindro": f"BindReadOnlyPaths={APPTOOLS}:/usr/local/bin\nExecStart=/bin/sleep infinity",
    "bind": f"BindPaths={APPTOOLS}:/usr/local/bin\nExecStart=/bin/sleep infinity",
    "extdir": f"ExtensionDirectories={APPEXT}\nExecStart=/bin/sleep infinity",
    "tmpfs": "TemporaryFileSystem=/etc/ipcjanitor\nExecStart=/bin/sleep infinity",
    "rootimage": "RootImage=/srv/app.raw\nExecStart=/bin/true",
    "mountimages": "MountImages=/srv/app.raw:/opt/app\nExecStart=/bin/true",
    "extimages": "ExtensionImages=/srv/app.raw\nExecStart=/bin/true",
    "startonly": f"RootDirectory={APPROOT}\nRootDirectoryStartOnly=yes\nExecStart=/bin/fake serve",
    "later": "ExecStart=/bin/sleep infinity",
    "stale": "ExecStart=/bin/sleep infinity",
    "tmpl@": f"BindPaths={APPTOOLS}:/usr/local/bin\nExecStart=/bin/sleep infinity",
    "inst@": "ExecStart=/bin/sleep infinity",
}


def unit_name(name: str) -> str:
    return f"ctx-{name}.service"


def policy() -> str:
    tables = [
        f'[owners.ctx{i}]\nunit = "{unit_name(n)}"\nkeys = ["0x{0x63000000 + i:08x}"]\n'
        for i, n in enumerate(UNITS)
    ]
    return "\n".join(tables)


@pytest.fixture(scope="module")
def ctx() -> Iterator[Container]:
    c = Container()
    try:
        c.start()
        for exe in ("/usr/bin/ipcjanitor", "/usr/local/bin/ipcjanitor"):  # .deb's and pip's
            c.run(f"ln -sf {VENV_BIN / 'ipcjanitor'} {exe}")
        c.write("/tmp/fake.c", FAKE_C)
        c.run(f"mkdir -p {MARKS} {APPTOOLS} {APPROOT}/bin {APPROOT}/marks {APPROOT}{TRAMPOLINE.parent}"
              f" {APPEXT}/usr/local/bin {APPEXT}/usr/lib/extension-release.d")  # fmt: skip
        c.run(f"gcc -static -DMARKS='\"{MARKS}\"' -o {APPTOOLS}/ipcjanitor /tmp/fake.c")
        c.run(f"gcc -static -DMARKS='\"/marks\"' -o {APPROOT}/bin/fake /tmp/fake.c")
        c.run(f"cp {APPROOT}/bin/fake {APPROOT}{TRAMPOLINE}")
        c.run(f"cp {APPTOOLS}/ipcjanitor {APPEXT}/usr/local/bin/ipcjanitor")
        c.write(f"{APPEXT}/usr/lib/extension-release.d/extension-release.appext", "ID=_any\n")
        c.run(f"chown -R nobody:nogroup {APPROOT} {APPTOOLS} {APPEXT} && chmod 1777 {MARKS}")
        c.write("/etc/ipcjanitor/policy.d/ctx.toml", policy())
        for name, body in UNITS.items():
            c.write(f"/etc/systemd/system/{unit_name(name)}", f"[Service]\nUser=nobody\n{body}\n")
        c.run("systemctl daemon-reload")
        yield c
    finally:
        c.stop()


def marks(c: Container, where: str = MARKS) -> list[str]:
    return c.run(f"ls {where}").stdout.split()


def dropin(name: str) -> str:
    return f"/etc/systemd/system/{unit_name(name)}.d/ipcjanitor.conf"


def install(c: Container, name: str, exe: str = "ipcjanitor") -> tuple[int, str]:
    done = c.run(f"{exe} install-hook {unit_name(name)}", check=False)
    return done.returncode, done.stdout + done.stderr


def start_and_stop(c: Container, name: str) -> None:
    c.run(f"systemctl start {unit_name(name)} && systemctl stop {unit_name(name)}")


@pytest.mark.parametrize(
    ("name", "option", "exe", "where"),
    [
        ("rootdir", "RootDirectory=", "ipcjanitor", f"{APPROOT}/marks"),
        ("bindro", "BindReadOnlyPaths=", "/usr/local/bin/ipcjanitor", MARKS),
        ("bind", "BindPaths=", "/usr/local/bin/ipcjanitor", MARKS),
        ("extdir", "ExtensionDirectories=", "/usr/local/bin/ipcjanitor", MARKS),
    ],
)
def test_a_view_that_puts_nobodys_file_at_the_hooks_path_is_refused(
    ctx: Container, name: str, option: str, exe: str, where: str
) -> None:
    code, said = install(ctx, name, exe)
    start_and_stop(ctx, name)
    # before the fix install-hook wrote the drop-in and the stop ran nobody's fake as root
    assert "fake.0" not in marks(ctx, where), f"{exe} install-hook {name}: {said}"
    assert code == 77, said
    assert option in said and "no drop-in was written" in said
    assert ctx.run(f"test -e {dropin(name)}", check=False).returncode == 1


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("tmpfs", "TemporaryFileSystem=/etc/ipcjanitor"),
        ("rootimage", "RootImage=/srv/app.raw"),
        ("mountimages", "MountImages=/srv/app.raw:/opt/app"),
        ("extimages", "ExtensionImages=/srv/app.raw"),
        ("tmpl@", "BindPaths=/run/apptools:/usr/local/bin"),
    ],
)
def test_every_option_that_changes_the_hooks_view_is_refused(
    ctx: Container, name: str, option: str
) -> None:
    code, said = install(ctx, name)
    assert (code, option in said) == (77, True), said
    assert ctx.run(f"test -e {dropin(name)}", check=False).returncode == 1


def test_a_drop_in_of_one_instance_counts_for_its_template(ctx: Container) -> None:
    ctx.write(
        "/etc/systemd/system/ctx-inst@3.service.d/app.conf",
        f"[Service]\nBindReadOnlyPaths={APPTOOLS}:/usr/local/bin\n",
    )
    ctx.run("systemctl daemon-reload")
    code, said = install(ctx, "inst@")
    assert code == 77 and "ctx-inst@3.service: BindReadOnlyPaths=" in said, said


def test_a_unit_file_changed_since_the_last_reload_is_read_as_changed(ctx: Container) -> None:
    ctx.write(dropin("stale").replace("ipcjanitor.conf", "app.conf"),
              f"[Service]\nRootDirectory={APPROOT}\n")  # fmt: skip
    code, said = install(ctx, "stale")  # systemd still runs the old file until a reload
    assert code == 77 and "RootDirectory=" in said, said


def test_root_directory_for_exec_start_only_leaves_the_hook_outside(ctx: Container) -> None:
    code, said = install(ctx, "startonly")
    assert code == 0, said
    start_and_stop(ctx, "startonly")
    assert "fake.0" not in marks(ctx, f"{APPROOT}/marks")
    out = ctx.run(f"journalctl --no-pager -o cat -u {unit_name('startonly')}").stdout
    assert "ctx-startonly.service stopped" in out  # the real hook ran, outside the root


def test_doctor_reports_a_hook_whose_unit_later_changed_its_view(ctx: Container) -> None:
    assert install(ctx, "later")[0] == 0
    ctx.write(
        "/etc/systemd/system/ctx-later.service.d/app.conf",
        f"[Service]\nBindReadOnlyPaths={APPTOOLS}:/usr/local/bin\n",
    )
    ctx.run("systemctl daemon-reload")
    done = ctx.run("ipcjanitor doctor", check=False)
    line = [x for x in done.stdout.splitlines() if "ctx-later.service" in x]
    assert done.returncode == 1 and line, done.stdout + done.stderr
    assert line[0].startswith("UNSAFE HOOK:") and "BindReadOnlyPaths=" in line[0]
    assert "install-hook --remove ctx-later.service" in line[0]

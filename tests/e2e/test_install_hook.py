"""install-hook under a real systemd: the drop-in systemd parses is the argv install-hook meant."""

from __future__ import annotations

import json
import shlex

import pytest

from .conftest import POLICY, VENV_BIN, journal, sysvipc_keys
from .container import ROOT, Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

TRAMPOLINE = str(ROOT / "ipcjanitor" / "ipcjanitor-hook")
# a space, a specifier, a variable, both quotes and a backslash: each would break or change
# an unquoted ExecStopPost= line
ODD_DIR = "/etc/ipcjanitor/odd 100%n $HOME \"q\" 'q' a\\b"


def exec_stop_post(c: Container, unit: str) -> list[list[str]]:
    """The argv of each ExecStopPost= command, exactly as systemd holds it (over D-Bus)."""
    path = "/org/freedesktop/systemd1/unit/" + unit.replace(".", "_2e").replace("-", "_2d")
    out = c.run(
        "busctl get-property --json=short org.freedesktop.systemd1 "
        f"{path} org.freedesktop.systemd1.Service ExecStopPost"
    ).stdout
    return [cmd[1] for cmd in json.loads(out)["data"]]


def shell_words(c: Container, line: str) -> list[str]:
    out = c.run('IFS= read -r line; eval "set -- $line"; printf \'%s\\0\' "$@"', input=line)
    return out.stdout.split("\0")[:-1]


def kill_leaky(c: Container) -> int:
    c.run("systemctl start leaky.service")
    c.wait_until(
        "test $(wc -l < /proc/sysvipc/shm) -ge 2 && test $(wc -l < /proc/sysvipc/sem) -ge 2"
    )
    pid = int(c.run("systemctl show -p MainPID --value leaky.service").stdout)
    assert len(sysvipc_keys(c, "shm")) == 1
    c.run("systemctl kill -s KILL leaky.service")
    c.wait_until("test $(systemctl show -p ActiveState --value leaky.service) = failed")
    return 0x61040000 | (pid & 0xFFFF)


def test_a_policy_path_with_odd_characters_reaches_the_hook_intact(box: Container) -> None:
    policy = f"{ODD_DIR}/policy.toml"
    box.run(f"mkdir -p {shlex.quote(ODD_DIR)} && cat > {shlex.quote(policy)}", input=POLICY)
    box.run(f"ipcjanitor --policy {shlex.quote(policy)} install-hook leaky.service")
    want = [TRAMPOLINE, "/usr/bin/ipcjanitor", f"--policy={policy}", "hook", "--unit=leaky.service"]
    (argv,) = exec_stop_post(box, "leaky.service")
    assert argv == [a.replace("$", "$$") for a in want]  # systemd substitutes $$ at exec time
    shown = box.run("systemctl show -p ExecStopPost leaky.service").stdout
    assert f"argv[]={' '.join(argv)} ;" in shown and "ignore_errors=yes" in shown

    key = kill_leaky(box)
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    records = journal(box, "IPCJANITOR_UNIT=leaky.service")
    assert sorted(str(r["IPCJANITOR_KIND"]) for r in records) == ["sem", "shm"]
    assert {r["IPCJANITOR_KEY"] for r in records} == {f"0x{key:08x}"}
    # the removals prove the hook read the policy at that path (a mangled --policy is a policy
    # error: nothing removed). Where journald recorded the sender's command line (it reads
    # /proc when the record arrives: a hook that has exited by then leaves none, seen under
    # load in CI), the hook process ran with exactly that argv after systemd's substitutions
    # (journald quotes it for a shell: let one unquote it)
    for r in (r for r in records if "_CMDLINE" in r):
        assert shell_words(box, str(r["_CMDLINE"])) == [
            str(VENV_BIN / "python"), "/usr/bin/ipcjanitor", f"--policy={policy}", "hook",
            "--unit=leaky.service",
        ]  # fmt: skip


def test_a_control_character_in_the_policy_path_writes_nothing(box: Container) -> None:
    odd = "/etc/ipcjanitor/new\nline"
    box.run(f"mkdir -p {shlex.quote(odd)} && cat > {shlex.quote(odd + '/p.toml')}", input=POLICY)
    refused = box.run(
        f"ipcjanitor --policy {shlex.quote(odd + '/p.toml')} install-hook leaky.service",
        check=False,
    )
    assert refused.returncode == 64 and "control character '\\n'" in refused.stderr
    assert box.run("test -e /etc/systemd/system/leaky.service.d", check=False).returncode == 1


def test_python_m_installs_an_isolated_interpreter(box: Container) -> None:
    box.run(f"cd /tmp && {VENV_BIN / 'python'} -m ipcjanitor install-hook leaky.service")
    (argv,) = exec_stop_post(box, "leaky.service")
    assert argv == [TRAMPOLINE, str(VENV_BIN / "python"), "-I", "-m", "ipcjanitor", "hook",
                    "--unit=leaky.service"]  # fmt: skip
    kill_leaky(box)
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    # a python that, isolated, would import some other ipcjanitor (or none) is refused
    refused = box.run(
        f"cd {ROOT} && /usr/bin/python3 -m ipcjanitor install-hook --runtime leaky.service",
        check=False,
    )
    assert refused.returncode == 77 and "not this one" in refused.stderr
    assert box.run("test -e /run/systemd/system/leaky.service.d", check=False).returncode == 1


def test_a_name_without_a_type_is_the_service_as_in_systemctl(box: Container) -> None:
    """`install-hook leaky` hooks leaky.service and `hook --unit leaky` cleans its owners, as
    `systemctl stop leaky` stops leaky.service."""
    box.run("ipcjanitor install-hook leaky")
    box.run("test -f /etc/systemd/system/leaky.service.d/ipcjanitor.conf")
    assert box.run("test -e /etc/systemd/system/leaky.service.service.d", check=False).returncode
    (argv,) = exec_stop_post(box, "leaky.service")
    assert argv[-1] == "--unit=leaky.service"
    kill_leaky(box)
    assert sysvipc_keys(box, "shm") == [] and sysvipc_keys(box, "sem") == []
    by_hand = box.run("ipcjanitor hook --unit leaky").stdout
    assert "no policy owner is bound" not in by_hand and "leaky.service stopped" in by_hand

"""The shipped ipcjanitor.service with --metrics under a real systemd, on Debian's layout.

/var/lib/prometheus is the prometheus user's (65534 here), its node-exporter/ root's. The box
gets a tmpfs of its own over /var/lib (its mount namespace only): the host's is untouched.
"""

from __future__ import annotations

import pytest

from .container import Container, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

PROMETHEUS = 65534
DIR = "/var/lib/prometheus/node-exporter"
DROP_IN = "/etc/systemd/system/ipcjanitor.service.d/metrics.conf"


def debian_layout(box: Container) -> None:
    box.run("mount -t tmpfs -o mode=0755 tmpfs /var/lib")
    box.run(f"mkdir -p {DIR} /srv/vault && chown {PROMETHEUS}:{PROMETHEUS} /var/lib/prometheus")
    box.run("chmod 0700 /srv/vault")


def swap_for_symlink(box: Container) -> None:
    """What the prometheus user can do: its node-exporter/ replaced by a symlink to /srv/vault."""
    box.run(
        f"setpriv --reuid={PROMETHEUS} --regid={PROMETHEUS} --clear-groups sh -c "
        f"'mv {DIR} /var/lib/prometheus/was && ln -s /srv/vault {DIR}'"
    )


def start_with(box: Container, exec_start: str) -> int:
    box.write(DROP_IN, f"[Service]\nExecStart=\nExecStart={exec_start}\n")
    box.run("systemctl daemon-reload")
    return box.run("systemctl start ipcjanitor.service", check=False).returncode


def test_the_unit_lets_clean_write_its_metrics_into_node_exporters_directory(
    box: Container,
) -> None:
    debian_layout(box)
    assert start_with(box, f"/usr/bin/ipcjanitor -q clean --metrics {DIR}/ipcjanitor.prom") == 0
    st = box.run(f"stat -c '%a %u %F' {DIR}/ipcjanitor.prom").stdout.split(maxsplit=2)
    assert st == ["644", "0", "regular file\n"]
    text = box.run(f"cat {DIR}/ipcjanitor.prom").stdout
    # the timer's series: its unit's name, and what doctor knows, read inside the hardened unit
    here = 'source="clean",unit="ipcjanitor.service"'
    assert f"ipcjanitor_last_run_exit_code{{{here}}} 0.0" in text
    shmmni = box.run("cat /proc/sys/kernel/shmmni").stdout.strip()
    assert (f'ipcjanitor_table_limit{{{here},kind="shm",measure="objects",'
            f'limit="kernel.shmmni"}} {float(shmmni)}') in text  # fmt: skip
    assert f"ipcjanitor_stuck_pipes{{{here}}} 0.0" in text
    assert f"ipcjanitor_owners_without_hook{{{here}}} 1.0" in text  # leaky.service


def test_a_symlink_in_place_of_the_directory_makes_nothing_else_writable(box: Container) -> None:
    debian_layout(box)
    swap_for_symlink(box)
    assert start_with(box, "/bin/touch /srv/vault/written") != 0  # ProtectSystem=strict holds
    assert box.run("ls -A /srv/vault").stdout == ""


def test_a_symlink_in_place_of_the_directory_is_refused_before_any_removal(box: Container) -> None:
    debian_layout(box)
    swap_for_symlink(box)
    box.run("systemctl reset-failed ipcjanitor.service", check=False)
    assert start_with(box, f"/usr/bin/ipcjanitor -q clean --metrics {DIR}/ipcjanitor.prom") != 0
    assert box.run("ls -A /srv/vault").stdout == ""
    log = box.run("journalctl --no-pager -o cat -u ipcjanitor.service").stdout
    assert f"symlink {DIR} is owned by uid {PROMETHEUS}, not root" in log
    assert "nothing was removed" in log


HOOK_FILE = f"{DIR}/ipcjanitor-%n.prom"
LEAKY_DROP_IN = "/etc/systemd/system/leaky.service.d/ipcjanitor.conf"


def test_install_hook_writes_metrics_into_the_drop_in_and_a_re_run_keeps_it(
    box: Container,
) -> None:
    debian_layout(box)
    box.run(f"ipcjanitor install-hook --metrics {HOOK_FILE} leaky.service")
    assert f"hook --unit=%n --metrics={HOOK_FILE}\n" in box.run(f"cat {LEAKY_DROP_IN}").stdout
    again = box.run("ipcjanitor install-hook leaky.service").stdout
    assert f"kept --metrics {HOOK_FILE}" in again and "nothing changed" in again
    # one added by hand is kept too, in install-hook's spelling
    box.run(f"sed -i 's| --metrics=[^ ]*$| --metrics /var/lib/prometheus/node-exporter/h.prom|' "
            f"{LEAKY_DROP_IN}")  # fmt: skip
    box.run("ipcjanitor install-hook leaky.service")
    assert f"--metrics={DIR}/h.prom\n" in box.run(f"cat {LEAKY_DROP_IN}").stdout
    box.run(f"ipcjanitor install-hook --metrics {HOOK_FILE} leaky.service")
    # the hook, after a SIGKILL, writes the unit's file: its series say source="hook"
    box.run("systemctl start leaky.service")
    box.wait_until("test $(wc -l < /proc/sysvipc/shm) -ge 2")
    box.run("systemctl kill -s KILL leaky.service")
    box.wait_until(f"test -s {DIR}/ipcjanitor-leaky.service.prom")
    text = box.run(f"cat {DIR}/ipcjanitor-leaky.service.prom").stdout
    assert (
        'ipcjanitor_removed_objects_total{source="hook",unit="leaky.service",kind="shm"} 1.0'
        in text
    )
    assert 'ipcjanitor_last_run_exit_code{source="hook",unit="leaky.service"} 0.0' in text
    dropped = box.run("ipcjanitor install-hook --no-metrics leaky.service").stdout
    assert "wrote" in dropped and "--metrics" not in box.run(f"cat {LEAKY_DROP_IN}").stdout

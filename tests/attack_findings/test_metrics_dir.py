"""--metrics FILE through a directory another user controls (node_exporter's Debian layout:
/var/lib/prometheus is the prometheus user's, node-exporter/ in it root's). The user swaps
root's directory for its own between the check (prepare, before anything is removed) and the
write (after the removals): the file must land in the directory checked, never in the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipcjanitor.errors import MetricsError
from ipcjanitor.output import metrics

PROMETHEUS = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root to chown")


def test_held_the_directory_swapped_between_check_and_write(tmp_path: Path) -> None:
    home = tmp_path / "prometheus"
    home.mkdir(mode=0o755)
    os.chown(home, PROMETHEUS, PROMETHEUS)
    (home / "node-exporter").mkdir(mode=0o755)
    target = metrics.prepare(str(home / "node-exporter" / "ipcjanitor.prom"))
    # the prometheus user (it owns home): rename root's directory away, put its own there
    os.rename(home / "node-exporter", home / "old")
    mine = home / "node-exporter"
    mine.mkdir(mode=0o777)
    os.chown(mine, PROMETHEUS, PROMETHEUS)
    os.symlink("/etc/shadow-would-be", mine / "ipcjanitor.prom")
    metrics.write(target, [], 0.0, 1.0, run=metrics.Run("clean", ""))
    assert (home / "old" / "ipcjanitor.prom").read_text().startswith("#")
    assert sorted(os.listdir(mine)) == ["ipcjanitor.prom"]  # its symlink, untouched
    assert os.path.islink(mine / "ipcjanitor.prom")
    with pytest.raises(MetricsError):  # the next run refuses the user's directory
        metrics.prepare(str(mine / "ipcjanitor.prom"))

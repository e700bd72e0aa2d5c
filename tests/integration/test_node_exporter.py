"""The files ipcjanitor writes, scraped by Debian's real prometheus-node-exporter.

The timer's file and two hooks' files are written by the real commands in private IPC, pid
and mount namespaces (harness.in_namespace); node_exporter (only its textfile collector) is
started by pid on a free loopback port, its textfile directory a private temporary one, and
stopped by that pid. Every series must be scraped once, with no error in its log (the bug of
issue 21: both kinds of file wrote the same series, and node_exporter dropped them), and
`promtool check metrics` must find nothing to say about the ipcjanitor families.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipcjanitor.output import metrics

from .harness import in_namespace, needs_namespaces

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
pytestmark = [
    pytest.mark.integration,
    needs_namespaces,
    pytest.mark.skipif(not Path(NODE_EXPORTER).exists(), reason="prometheus-node-exporter missing"),
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (prometheus) missing"),
]

POLICY = """
min_age = "0s"
pid_namespace_complete = true
[owners.a]
unit = "a.service"
keys = ["0x10000400-0x100004ff"]
[owners.b]
unit = "b.service"
keys = ["0x10000500-0x100005ff"]
[owners.rest]
keys = ["0x10000300-0x100003ff"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Exporter:
    def __init__(self, textdir: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as f:
            self.proc = subprocess.Popen(
                [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{self.port}",
                 "--collector.disable-defaults", "--collector.textfile",
                 f"--collector.textfile.directory={textdir}"],
                stdout=f, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def scrape(self) -> str:
        end = time.monotonic() + 20
        while True:
            try:
                url = f"http://127.0.0.1:{self.port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as r:  # loopback
                    return str(r.read().decode())
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()  # by the pid it started
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def written(tmp_path: Path) -> Path:
    textdir = tmp_path / "textfile"
    textdir.mkdir(mode=0o755)
    r = in_namespace("metrics_for_node_exporter", POLICY, tmp_path, str(textdir))
    assert r["rcs"] == [0, 0, 0], r["stderr"]
    assert sorted(p.name for p in textdir.iterdir()) == [
        "ipcjanitor-a.service.prom", "ipcjanitor-b.service.prom", "ipcjanitor.prom"
    ]  # fmt: skip
    return textdir


@pytest.fixture
def exporter(written: Path, tmp_path: Path) -> Iterator[Exporter]:
    e = Exporter(written, tmp_path / "node_exporter.log")
    try:
        yield e
    finally:
        e.stop()


Key = tuple[str, tuple[tuple[str, str], ...], float]


def series(text: str) -> Counter[Key]:
    """Each ipcjanitor sample (name, sorted labels, value), counted: node_exporter re-renders
    them (labels sorted, 0 for 0.0), so they are compared parsed."""
    lines = [line for line in text.splitlines() if line.startswith("ipcjanitor_")]
    return Counter((name, labels, v) for line in lines
                   for (name, labels), v in metrics.parse(line).items())  # fmt: skip


def test_the_timer_file_and_two_hook_files_are_scraped_whole(
    written: Path, exporter: Exporter
) -> None:
    scraped = exporter.scrape()
    got = series(scraped)
    wanted = Counter[Key]()
    for f in written.iterdir():
        wanted += series(f.read_text())
    assert got == wanted and set(got.values()) == {1}  # every series once, none dropped
    removed = {dict(labels)["source"] + " " + dict(labels)["unit"]: v for name, labels, v in got
               if name == "ipcjanitor_removed_objects_total" and ("kind", "shm") in labels}  # fmt: skip
    here = metrics.own_unit()  # the commands ran in this process's cgroup
    assert removed.keys() == {f"clean {here}", "hook a.service", "hook b.service"}
    assert removed[f"clean {here}"] == 3
    assert any(name == "ipcjanitor_table_limit" for name, _, _ in got)  # the timer's doctor rows
    assert "node_textfile_scrape_error 0" in scraped
    exporter.stop()
    log = exporter.log.read_text()
    assert "error" not in log.lower(), log


def test_promtool_finds_nothing_to_say(written: Path, exporter: Exporter) -> None:
    scraped = exporter.scrape()
    ours = "".join(
        line + "\n" for line in scraped.splitlines()
        if line.startswith(("ipcjanitor_", "# HELP ipcjanitor_", "# TYPE ipcjanitor_"))
    )  # fmt: skip
    r = subprocess.run(["promtool", "check", "metrics"], input=ours, capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def test_the_same_series_in_two_files_is_what_node_exporter_refuses(
    written: Path, exporter: Exporter
) -> None:
    """The control: the scrape test above would see issue 21's bug (a series written twice)."""
    shutil.copy(written / "ipcjanitor-a.service.prom", written / "copy.prom")
    exporter.scrape()
    exporter.stop()
    assert "collected before with the same name and label values" in exporter.log.read_text()

"""Fixtures of the peers tier: each peer's source (fetched once into build/peers/) and its
three runs — alone, bound, unit-less — made at once, each in its own namespaces."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ipcjanitor.kernel.cgroups import hierarchies
from tests.integration.harness import can_unshare
from tests.peers import fetch, harness

PEERS = {
    "sysv_ipc": ("unittest", fetch.sysv_ipc_suite),
    "IPC::Shareable": ("prove", fetch.shareable_suite),
}
MODES = ("baseline", "bound", "unitless")


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # unittest or prove
    root: Path  # its unpacked source, tests included
    runs: dict[str, Any]  # mode -> inside.py's document of that run

    @property
    def baseline(self) -> Any:
        return self.runs["baseline"]


@contextmanager
def unit_cgroup() -> Iterator[Path]:
    """harness.UNIT's stand-in: a directory of that name in the hierarchy ipcjanitor reads."""
    found = hierarchies(Path("/proc/self/mountinfo").read_text())
    if not found:
        pytest.skip("no cgroup2 or name=systemd hierarchy is mounted")
    base = found[0].mount / f"ipcjanitor-peers-{secrets.token_hex(4)}"
    unit = base / harness.UNIT
    unit.mkdir(parents=True)
    try:
        yield unit
    finally:
        for _ in range(50):  # the namespace's last processes may still be exiting
            try:
                unit.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        base.rmdir()


@pytest.fixture(scope="module", params=sorted(PEERS))
def peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Peer:
    """The peer's suite run alone, beside a bound clean loop and beside a unit-less one, the
    three at once (each in fresh namespaces: they share nothing but the CPUs)."""
    if not can_unshare():
        pytest.skip("needs root and unshare --ipc --pid")
    kind, get = PEERS[request.param]
    root = get()
    tmp = tmp_path_factory.mktemp("peers")
    with unit_cgroup() as cgroup, ThreadPoolExecutor(len(MODES)) as pool:
        futures = {
            mode: pool.submit(
                harness.run, mode, kind, root, tmp, cgroup if mode == "bound" else None
            )
            for mode in MODES
        }
        runs = {mode: f.result() for mode, f in futures.items()}
    return Peer(request.param, kind, root, runs)

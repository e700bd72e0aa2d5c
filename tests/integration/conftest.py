"""Fixtures shared by the integration tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def cgroup_base() -> Iterator[Path]:
    """A scratch cgroup the namespace test can name a 'unit' inside; removed afterwards."""
    for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and (root / "cgroup.controllers").exists():
            break
    else:
        root = Path("/sys/fs/cgroup/systemd")
    base = root / f"ipcjanitor-test-{secrets.token_hex(4)}"
    base.mkdir()
    try:
        yield base
    finally:
        base.rmdir()

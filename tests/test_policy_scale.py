"""Policy loading is linear in the file's size: counted in function calls, never timed.

Issue 16.9: one file with 2,000/4,000/8,000 owners took 6/25/97 s (every owner's source line
was found by scanning the whole file again). Doubling the owners must double the work, not
quadruple it; the count of Python and C function calls made while loading (sys.setprofile)
is the measure, so the test is exact and independent of the machine's speed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from ipcjanitor.errors import PolicyErrors
from ipcjanitor.policy.load import load_policy


def policy_text(owners: int, broken: bool) -> str:
    out = ['min_age = "10m"\n']
    for i in range(owners):
        low = 0x61000000 + i * 16
        out.append(
            f"[owners.o{i}]\n"
            f'unit = "svc{i}.service"\n'
            f'keys = ["0x{low:08x}-0x{low + 15:08x}"]\n'
            'uid = 0\nmin_age = "1m"\n' + ("colour = 1\n" if broken else "") + "\n"
        )
    return "".join(out)


def calls_to_load(tmp_path: Path, owners: int, broken: bool) -> int:
    path = tmp_path / f"p{owners}.toml"
    path.write_text(policy_text(owners, broken))
    calls = 0

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        policy = load_policy(str(path), strict_modes=False)
    except PolicyErrors as exc:
        sys.setprofile(None)
        assert broken and len(exc.problems) == owners  # each names its own line
        assert all(p.line is not None for p in exc.problems)
    else:
        sys.setprofile(None)
        assert not broken and len(policy.owners) == owners
    return calls


@pytest.mark.parametrize("broken", [False, True], ids=["valid", "an-error-per-owner"])
def test_twice_the_owners_is_twice_the_work(tmp_path: Path, broken: bool) -> None:
    small, large = (calls_to_load(tmp_path, n, broken) for n in (300, 600))
    # linear: 1.98x here; the quadratic line finder gave 3.87x, and more as n grows
    assert large / small < 2.2, (small, large)

"""Zero cost for System V users: no POSIX module is imported, nothing listed or read, unless
some owner claims a POSIX kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from ipcjanitor.cli import main
rc = main(["--policy", sys.argv[1], "scan", "--json"])
loaded = [m for m in ("ipcjanitor.engine.posix_run", "ipcjanitor.kernel.posix",
                      "ipcjanitor.kernel.holders", "ctypes") if m in sys.modules]
print("LOADED", ",".join(loaded), rc)
"""


def loaded(tmp: Path, policy: str) -> str:
    path = tmp / "p.toml"
    path.write_text(policy)
    out = subprocess.run([sys.executable, "-I", "-c", PROBE, str(path)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parent.parent)  # fmt: skip
    return next(line for line in out.stdout.splitlines() if line.startswith("LOADED"))


def test_a_sysv_only_policy_never_loads_the_posix_code(tmp_path: Path) -> None:
    assert loaded(tmp_path, '[owners.a]\nkeys = ["0x10"]\n') == "LOADED  0"


def test_a_posix_owner_loads_it(tmp_path: Path) -> None:
    # /dev/shm of this host is only listed (read-only), nothing is removed by scan
    assert "ipcjanitor.kernel.posix" in loaded(tmp_path, '[owners.a]\nnames = ["zz_none_*"]\n')

"""Run a unittest suite (sysv_ipc's tests/) and write what broke as JSON: pyunit.py ROOT OUT."""

from __future__ import annotations

import json
import sys
import unittest
from pathlib import Path


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    suite = unittest.TestLoader().discover(str(root / "tests"), top_level_dir=str(root))
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(suite)
    broken = [t.id() for t, _ in result.failures + result.errors]  # a test and its tearDown
    broken += [t.id() for t in result.unexpectedSuccesses]
    details = {t.id(): text[-600:] for t, text in result.failures + result.errors}
    doc = {"ran": result.testsRun, "skipped": len(result.skipped), "broken": sorted(set(broken))}
    out.write_text(json.dumps({**doc, "details": details}))


if __name__ == "__main__":
    main()

"""Under CI=true a skipped test fails the run: a tier that silently vanished must not pass."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.mark.parametrize(("ci", "fails"), [("true", True), ("", False)])
def test_a_skip_fails_only_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, fails: bool
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.skipif(True, reason="needs root and unshare --ipc --pid")
        def test_real_kernel():
            pass
        """
    )
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert (result.ret != 0) is fails
    if fails:
        result.stdout.fnmatch_lines(["*skipped under CI=true*needs root and unshare*"])

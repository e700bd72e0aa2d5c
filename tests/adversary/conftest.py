"""The adversarial harness's summary line, printed at the end of every pytest run that ran it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversary.outside import summary

RESULTS: list[dict[str, Any]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.write_line(summary(RESULTS))


@pytest.fixture
def results() -> list[dict[str, Any]]:
    return RESULTS

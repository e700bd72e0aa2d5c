"""Errors a user can act on: each says where, what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path


class IpcJanitorError(Exception):
    """Base of every error ipcjanitor reports to its user."""

    exit_code = 1


class PolicyError(IpcJanitorError):
    """The policy cannot be used; nothing will be removed (exit 78, EX_CONFIG)."""

    exit_code = 78

    def __init__(self, path: Path | str | None, line: int | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        super().__init__(self.located())

    def located(self) -> str:
        where = self.path or "<policy>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.problem}"


class PolicyErrors(IpcJanitorError):
    """Every problem found in the policy, reported together."""

    exit_code = 78

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.located() for e in errors))


class ProcfsFormatError(IpcJanitorError):
    """A /proc table line that does not parse: the kernel format changed under us."""

    def __init__(self, path: str, line_no: int, line: str, problem: str) -> None:
        super().__init__(f"{path}:{line_no}: {problem}: {line!r}")


class NotPermittedError(IpcJanitorError):
    """ipcjanitor lacks the privilege or visibility the command needs (exit 77)."""

    exit_code = 77


class UsageError(IpcJanitorError):
    exit_code = 64

"""Errors a user can act on (each says where, what is wrong and what to do), and exit codes."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import NamedTuple


class ExitCode(IntEnum):
    """The contract's exit statuses, the only place they are defined."""

    OK = 0  # done; nothing to do counts as done
    FAILED = 1  # some removal failed (doctor: a problem found)
    USAGE = 64  # EX_USAGE
    SOFTWARE = 70  # EX_SOFTWARE: an internal error, a bug
    NOPERM = 77  # EX_NOPERM: not permitted, or cannot see what it must see
    CONFIG = 78  # EX_CONFIG: a policy error, and nothing was removed
    INTERRUPTED = 130  # SIGINT, as the shell reports it


class IpcJanitorError(Exception):
    """Base of every error ipcjanitor reports to its user."""

    exit_code = ExitCode.FAILED


class PolicyProblem(NamedTuple):
    """One thing wrong with the policy: the file, the line when known, and what to do."""

    path: str | None
    line: int | None
    problem: str

    def located(self) -> str:
        where = self.path or "<policy>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.problem}"


class PolicyErrors(IpcJanitorError):
    """The policy cannot be used, for every reason found; nothing will be removed (exit 78)."""

    exit_code = ExitCode.CONFIG
    # set when a journal record at priority err told it and stderr is the journal too:
    # `guarded` then prints nothing (one record per fact)
    journaled = False

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        # by file and line, as a compiler lists them (a problem without a file first)
        self.problems = sorted(problems, key=lambda p: (p.path or "", p.line or 0))
        super().__init__("\n".join(p.located() for p in self.problems))

    @classmethod
    def one(
        cls, path: str | os.PathLike[str] | None, line: int | None, problem: str
    ) -> PolicyErrors:
        return cls([PolicyProblem(None if path is None else os.fspath(path), line, problem)])


class ProcfsFormatError(IpcJanitorError):
    """A /proc table line that does not parse: the kernel format changed under us."""

    def __init__(self, path: str, line_no: int, line: str, problem: str) -> None:
        super().__init__(f"{path}:{line_no}: {problem}: {line!r}")


class NotPermittedError(IpcJanitorError):
    """ipcjanitor lacks the privilege or visibility the command needs (exit 77)."""

    exit_code = ExitCode.NOPERM


class UsageError(IpcJanitorError):
    exit_code = ExitCode.USAGE


class MetricsError(UsageError):
    """--metrics FILE cannot be written, or not safely: the path as given, what is wrong and
    what to do, and whether the run had removed anything yet (exit 64)."""

    def __init__(self, path: str, problem: str, removed_nothing: bool) -> None:
        tail = "nothing was removed" if removed_nothing else "the removals stand, unrecorded"
        super().__init__(f"--metrics {path}: {problem}; {tail}")
        self.path = path
        self.problem = problem


def exit_code_of(exc: BaseException) -> int:
    """The exit code `guarded` maps exc to (for a metrics file written before it is)."""
    if isinstance(exc, IpcJanitorError):
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, OSError):
        return ExitCode.NOPERM if exc.errno in (errno.EPERM, errno.EACCES) else ExitCode.FAILED
    return ExitCode.SOFTWARE


def guarded(command: Callable[[], int], removes: bool = False) -> int:
    """Run a command; map what it raises to one line on stderr and the contract's exit code.

    `removes`: the command could have removed something (clean, the hook), so a policy error
    says that it did not.
    """
    try:
        return command()
    except PolicyErrors as exc:
        what = "policy error, nothing was removed" if removes else "policy error"
        if not exc.journaled:
            print(f"ipcjanitor: {what}:\n{_indent(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except IpcJanitorError as exc:
        print(f"ipcjanitor: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except OSError as exc:  # an OS refusal nothing above translated: say what and where
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"ipcjanitor: {exc.strerror or exc}{where}; stopped there", file=sys.stderr)
        return ExitCode.NOPERM if exc.errno in (errno.EPERM, errno.EACCES) else ExitCode.FAILED
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("IPCJANITOR_DEBUG"):
            raise
        print(
            f"ipcjanitor: internal error ({type(exc).__name__}: {exc}); stopped there. "
            "Run with IPCJANITOR_DEBUG=1 for the traceback and report it.",
            file=sys.stderr,
        )
        return ExitCode.SOFTWARE


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())

"""Command line: parse, dispatch, map errors to the contract's exit codes. No logic here."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import ExitCode, IpcJanitorError, PolicyErrors
from .model import IpcKind


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ipcjanitor",
        description="Remove System V IPC objects that a policy says a service owns and that "
        "nobody provably uses; keep and explain everything else.",
    )
    p.add_argument("--version", action="version", version=f"ipcjanitor {__version__}")
    p.add_argument(
        "--policy", metavar="PATH", help="policy file or directory (replaces the search path)"
    )
    loud = p.add_mutually_exclusive_group()
    loud.add_argument(
        "-v", "--verbose", action="store_true", help="also print policy warnings and sources"
    )
    loud.add_argument(
        "-q", "--quiet", action="store_true", help="print only the summary line and errors"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def scoped(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--json", action="store_true", help="print one JSON document")
        cmd.add_argument(
            "--owner", action="append", metavar="NAME", help="only this owner's objects"
        )
        cmd.add_argument(
            "--kind", action="append", choices=[k.value for k in IpcKind], help="only this kind"
        )

    scoped(sub.add_parser("scan", help="dry run: every object, its verdict and reason"))
    c = sub.add_parser("clean", help="remove the stale objects the policy owns")
    scoped(c)
    c.add_argument("--dry-run", action="store_true", help="print what scan prints; remove nothing")
    c.add_argument("--metrics", metavar="FILE", help="write Prometheus textfile metrics to FILE")
    h = sub.add_parser("hook", help="for ExecStopPost=: clean the owners bound to UNIT")
    h.add_argument("--unit", required=True, help="the unit that stopped (pass %%n)")
    h.add_argument("--json", action="store_true", help="print one JSON document")
    h.add_argument("--metrics", metavar="FILE", help="write Prometheus textfile metrics to FILE")
    ih = sub.add_parser("install-hook", help="write the ExecStopPost= drop-in for UNIT")
    ih.add_argument("unit", metavar="UNIT", help='a service, or a template like "worker@.service"')
    ih.add_argument("--runtime", action="store_true", help="under /run (gone at reboot)")
    ih.add_argument("--remove", action="store_true", help="remove the drop-in instead")
    doc = sub.add_parser("doctor", help="IPC table use vs limits; processes stuck on pipes")
    doc.add_argument("--json", action="store_true", help="print one JSON document")
    lrn = sub.add_parser("learn", help="propose an owner table from what the running UNIT uses")
    lrn.add_argument("unit", metavar="UNIT", help="a running service or scope")
    lrn.add_argument(
        "--for", dest="for_", metavar="DURATION", default="60s", help="how long (default 60s)"
    )
    lrn.add_argument("--owner", metavar="NAME", help="owner name (default: from UNIT)")
    lrn.add_argument(
        "--write", action="store_true", help="write it to policy.d/NAME.toml (never overwrites)"
    )
    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(
        dest="policy_command", metavar="{check,owners,units}", parser_class=_Parser
    )
    chk = pol_sub.add_parser("check", help="validate and print the resolved owners")
    chk.add_argument("path", nargs="?", help="policy file or directory (default: the search path)")
    pol_sub.add_parser("owners", help="owner names, one per line (for shell completion)")
    pol_sub.add_parser("units", help="units owners are bound to, one per line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_usage(sys.stderr)
        return ExitCode.USAGE
    try:
        if args.command == "hook":  # in every service's stop path: import only what it needs
            from .hook import cmd_hook  # noqa: PLC0415

            return cmd_hook(args)
        from . import commands  # noqa: PLC0415  (lazy: `--help` and usage errors stay cheap)

        return commands.dispatch(args)
    except PolicyErrors as exc:
        print(
            f"ipcjanitor: policy error, nothing was removed:\n{_indent(str(exc))}", file=sys.stderr
        )
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

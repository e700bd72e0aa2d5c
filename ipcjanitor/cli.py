"""Command line: parse, dispatch, map errors to the contract's exit codes. No logic here.

argparse is imported only when a parser is built: the hook's own path (entry.py, hookgate.py)
parses its argv without it and shares only `errors.guarded`, the mapping of errors to exit codes.
"""

from __future__ import annotations

import sys

from .errors import ExitCode, guarded

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any, NoReturn

# The options every command takes, before or after its name (as systemctl and git do).
GLOBAL_OPTIONS = ("--policy", "-v", "--verbose", "-q", "--quiet")


def _add_global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    """--policy, -v, -q on the main parser, and again (suppress=True) on each subcommand's.

    A subcommand's copy defaults to argparse.SUPPRESS: it sets its attribute only when given
    there, over the main parser's value, so the later occurrence wins. -v and -q are
    exclusive within one parser here and across parsers in `parse`.
    """
    import argparse  # noqa: PLC0415

    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument(
        "--policy", metavar="PATH", help="policy file or directory (replaces the search path)",
        **unset,
    )  # fmt: skip
    loud = p.add_mutually_exclusive_group()
    loud.add_argument(
        "-v", "--verbose", action="store_true", help="also print policy warnings and sources",
        **unset,
    )  # fmt: skip
    loud.add_argument(
        "-q", "--quiet", action="store_true", help="print only the summary line and errors",
        **unset,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    import argparse  # noqa: PLC0415  (not on the hook's path)

    from . import __version__  # noqa: PLC0415
    from .model import IpcKind, PosixKind  # noqa: PLC0415

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            self.print_usage(sys.stderr)
            self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")

    p = Parser(
        prog="ipcjanitor",
        description="Remove System V IPC objects that a policy says a service owns and that "
        "nobody provably uses; keep and explain everything else. The options --policy, -v "
        "and -q may also follow the command.",
    )
    p.add_argument("--version", action="version", version=f"ipcjanitor {__version__}")
    _add_global_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, help: str, *, global_options: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        if global_options:
            _add_global_options(cmd, suppress=True)
        return cmd

    def scoped(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--json", action="store_true", help="print one JSON document")
        cmd.add_argument(
            "--owner", action="append", metavar="NAME", help="only this owner's objects"
        )
        cmd.add_argument(
            "--kind",
            action="append",
            choices=[k.value for k in (*IpcKind, *PosixKind)],
            help="only this kind",
        )

    scoped(command("scan", "dry run: every object, its verdict and reason"))
    c = command("clean", "remove the stale objects the policy owns")
    scoped(c)
    c.add_argument("--dry-run", action="store_true", help="print what scan prints; remove nothing")
    c.add_argument("--metrics", metavar="FILE", help="write Prometheus textfile metrics to FILE")
    h = command("hook", "for ExecStopPost=: clean the owners bound to UNIT")
    h.add_argument("--unit", required=True, help="the unit that stopped (pass %%n)")
    h.add_argument("--json", action="store_true", help="print one JSON document")
    h.add_argument("--metrics", metavar="FILE", help="write Prometheus textfile metrics to FILE")
    ih = command("install-hook", "write the ExecStopPost= drop-in for UNIT")
    ih.add_argument("unit", metavar="UNIT", help='a service, or a template like "worker@.service"')
    ih.add_argument("--runtime", action="store_true", help="under /run (gone at reboot)")
    ih.add_argument("--remove", action="store_true", help="remove the drop-in instead")
    doc = command("doctor", "IPC table use vs limits; processes stuck on pipes")
    doc.add_argument("--json", action="store_true", help="print one JSON document")
    lrn = command("learn", "propose an owner table from what the running UNIT uses")
    lrn.add_argument("unit", metavar="UNIT", help="a running service or scope")
    lrn.add_argument(
        "--for", dest="for_", metavar="DURATION", default="60s", help="how long (default 60s)"
    )
    lrn.add_argument("--owner", metavar="NAME", help="owner name (default: from UNIT)")
    lrn.add_argument(
        "--write", action="store_true", help="write it to policy.d/NAME.toml (never overwrites)"
    )
    pol = command("policy", "policy tools")
    pol_sub = pol.add_subparsers(
        dest="policy_command", metavar="{check,owners,units}", parser_class=Parser
    )
    chk = pol_sub.add_parser("check", help="validate and print the resolved owners")
    chk.add_argument("path", nargs="?", help="policy file or directory (default: the search path)")
    for name, help in (
        ("owners", "owner names, one per line (for shell completion)"),
        ("units", "units owners are bound to, one per line"),
    ):
        pol_sub.add_parser(name, help=help)
    for leaf in pol_sub.choices.values():
        _add_global_options(leaf, suppress=True)
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """argv -> the namespace; a usage error exits 64 (argparse's SystemExit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:  # given on different levels: no group saw both
        parser.error("argument -q/--quiet: not allowed with argument -v/--verbose")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        build_parser().print_usage(sys.stderr)
        return ExitCode.USAGE
    if args.command == "hook":  # in every service's stop path: import only what it needs
        from .hook.gate import HookCall  # noqa: PLC0415
        from .hook.run import run_hook  # noqa: PLC0415

        return run_hook(HookCall(args.unit, args.policy, args.json, args.metrics, args.quiet))

    def dispatch() -> int:
        from .commands import table as commands  # noqa: PLC0415  (lazy: `--help` and usage errors stay cheap)

        return commands.dispatch(args)

    return guarded(dispatch)

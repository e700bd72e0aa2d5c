"""Command line: parse, dispatch, map errors to the contract's exit codes. No logic here.

argparse is imported only when a parser is built: the hook's own path (entry.py, hookgate.py)
parses its argv without it and shares only `errors.guarded`, the mapping of errors to exit codes.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from .errors import ExitCode, guarded

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
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
        "-v", "--verbose", action="store_true", help="also print warnings, sources and hints",
        **unset,
    )  # fmt: skip
    loud.add_argument(
        "-q", "--quiet", action="store_true", help="print only the summary line and errors",
        **unset,
    )  # fmt: skip


class Command(NamedTuple):
    """One subcommand: where its body is (imported only when it runs), its help, its
    arguments, and whether it can remove objects (a policy error then says none was)."""

    module: str
    function: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    removes: bool = False


def _scoped(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--json", action="store_true", help="print one JSON document")
    cmd.add_argument("--owner", action="append", metavar="NAME", help="only this owner's objects")
    from .model import IpcKind, PosixKind  # noqa: PLC0415

    cmd.add_argument(
        "--kind",
        action="append",
        choices=[k.value for k in (*IpcKind, *PosixKind)],
        help="only this kind",
    )
    cmd.add_argument(
        "--id",
        action="append",
        type=int,
        metavar="ID",
        help="only the System V object with this id (with --kind: of that table)",
    )
    cmd.add_argument(
        "--key",
        action="append",
        type=_key,
        metavar="KEY",
        help="only System V objects with this key (0x6104e88b, or decimal)",
    )
    _listing(cmd)


def _key(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(text)
    return value


def _listing(cmd: argparse.ArgumentParser, columns: bool = True) -> None:
    """lsipc's options for a table, and systemctl's for a terminal."""
    import argparse  # noqa: PLC0415

    from .output import report  # noqa: PLC0415
    from .output.columns import describe  # noqa: PLC0415

    if columns:
        cmd.add_argument(
            "-o",
            "--output",
            metavar="COLUMNS",
            help="the columns, comma-separated (+COLUMNS: after the default ones)",
        )
        cmd.add_argument("--bytes", action="store_true", help="print SIZE in bytes, not 1M")
        cmd.formatter_class = argparse.RawDescriptionHelpFormatter
        cmd.epilog = (
            f"Columns (default: {','.join(report.DEFAULT)}):\n"
            f"{describe(report.COLUMNS)}\nPOSIX objects also have NAME, DEV, INODE, "
            "NLINK, MTIME and HOLDERS (and no KEY or ID)."
        )
    cmd.add_argument("--noheadings", action="store_true", help="print no header line")
    cmd.add_argument(
        "-r",
        "--raw",
        action="store_true",
        help="one line per row, cells escaped, times in ISO 8601",
    )
    cmd.add_argument(
        "--notruncate", action="store_true", help="never truncate REASON to the terminal's width"
    )
    cmd.add_argument(
        "--no-legend",
        action="store_true",
        help="print neither the header nor the notes and the summary line",
    )
    cmd.add_argument("--no-pager", action="store_true", help="do not pipe the output into a pager")


def _clean(cmd: argparse.ArgumentParser) -> None:
    _scoped(cmd)
    cmd.add_argument(
        "--dry-run", action="store_true", help="print what scan prints; remove nothing"
    )
    cmd.add_argument("--metrics", metavar="FILE", help="write Prometheus textfile metrics to FILE")


def _hook(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--unit", required=True, help="the unit that stopped (pass %%n)")
    cmd.add_argument("--json", action="store_true", help="print one JSON document")
    cmd.add_argument("--metrics", metavar="FILE", help="write Prometheus textfile metrics to FILE")


def _install_hook(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("unit", metavar="UNIT", help='a service, or a template like "worker@.service"')
    cmd.add_argument("--runtime", action="store_true", help="under /run (gone at reboot)")
    cmd.add_argument("--remove", action="store_true", help="remove the drop-in instead")
    cmd.add_argument("--metrics", metavar="FILE",
                     help="the hook writes textfile metrics to FILE (%%n: the unit)")  # fmt: skip
    cmd.add_argument("--no-metrics", action="store_true",
                     help="drop the --metrics an existing drop-in has")  # fmt: skip


def _doctor(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--json", action="store_true", help="print one JSON document")
    _listing(cmd, columns=False)


def _learn(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("unit", metavar="UNIT", help="a running service or scope")
    cmd.add_argument(
        "--for", dest="for_", metavar="DURATION", default="60s", help="how long (default 60s)"
    )
    cmd.add_argument("--owner", metavar="NAME", help="owner name (default: from UNIT)")
    cmd.add_argument(
        "--write", action="store_true", help="write it to policy.d/NAME.toml (never overwrites)"
    )


def _policy(cmd: argparse.ArgumentParser) -> None:
    sub = cmd.add_subparsers(
        dest="policy_command", metavar="{check,owners,units}", parser_class=type(cmd)
    )
    chk = sub.add_parser("check", help="validate and print the resolved owners")
    chk.add_argument("path", nargs="?", help="policy file or directory (default: the search path)")
    for name, help in (
        ("owners", "owner names, one per line (for shell completion)"),
        ("units", "units owners are bound to, one per line"),
    ):
        sub.add_parser(name, help=help)
    for leaf in sub.choices.values():
        _add_global_options(leaf, suppress=True)


_BODIES = "ipcjanitor.commands.table"
# The subcommands, in --help's order: the one place that says where each body is.
COMMANDS: dict[str, Command] = {
    "scan": Command(_BODIES, "cmd_scan", "dry run: every object, its verdict and reason", _scoped),
    "clean": Command(_BODIES, "cmd_clean", "remove the stale objects the policy owns", _clean,
                     removes=True),
    "hook": Command(_BODIES, "cmd_hook", "for ExecStopPost=: clean the owners bound to UNIT",
                    _hook, removes=True),
    "install-hook": Command(_BODIES, "cmd_install_hook",
                            "write the ExecStopPost= drop-in for UNIT", _install_hook),
    "doctor": Command(_BODIES, "cmd_doctor", "IPC table use vs limits; processes stuck on pipes",
                      _doctor),
    "learn": Command(_BODIES, "cmd_learn",
                     "propose an owner table from what the running UNIT uses", _learn),
    "policy": Command(_BODIES, "cmd_policy", "policy tools", _policy),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    import argparse  # noqa: PLC0415  (not on the hook's path)

    from . import __version__  # noqa: PLC0415

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
    for name, command in COMMANDS.items():
        cmd = sub.add_parser(name, help=command.help)
        _add_global_options(cmd, suppress=True)
        command.arguments(cmd)
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
    command = COMMANDS[args.command]

    def run() -> int:
        import importlib  # noqa: PLC0415  (lazy: `--help` and usage errors stay cheap)

        body: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(command.module), command.function
        )
        return int(body(args))

    return guarded(run, removes=command.removes)

"""The command line: argparse verbs -> the core -> an exit code. Errors are one line."""

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from portguard import __version__

if TYPE_CHECKING:
    from portguard.host.prefetch import Early
from portguard.errors import Exit, UsageError, shielded

Handler = Callable[[argparse.Namespace], int]


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized as shutil.get_terminal_size() would without importing
    shutil (and bz2 and lzma with it): argparse makes one for every option it adds. Text
    of several lines (the exit status table) keeps its lines."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(1).columns
        except (ValueError, OSError):
            columns = 80
        super().__init__(prog, width=columns - 2)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def exit_codes(codes: dict[int, str]) -> str:
    """A verb's --help epilog: every exit status it can end with. A bad command line (64)
    and an internal error (70) can end any verb; sysexits' codes carry their names, as
    `systemctl status` shows them."""
    every = {64: "bad command line", 70: "internal error, a bug: rerun with --debug", **codes}
    lines = ["exit status:"]
    for code in sorted(every):
        name = f" ({Exit(code).name})" if code >= int(Exit.USAGE) else ""
        lines.append(f"  {code:>3}  {every[code]}{name}")
    return "\n".join(lines) + "\n"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad command lines with sysexits' USAGE, as one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(*, registry: bool) -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    if registry:
        common.add_argument(
            "--registry",
            type=Path,
            metavar="PATH",
            help="registry root directory or file (default: /etc/portguard)",
        )
    common.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    return common


VERBS = ("check", "why", "audit", "lint", "init", "dropin", "reserve", "wait")
# init writes a registry from what listens, and dropin guards the units it is given: neither
# reads one, so neither takes --registry.
WITHOUT_REGISTRY = ("init", "dropin")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of every verb; when ARGV starts with a verb, of that one alone (a held
    `check` runs on a unit's start, and the other six verbs' options are no use to it)."""
    parser = _Parser(prog="portguard", description="Guard systemd units' ports.")
    parser.add_argument("--version", action="version", version=f"portguard {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    verbs.required = True
    # Each verb loads only its own modules, when it runs.
    for verb in argv[:1] if argv[:1] and argv[0] in VERBS else VERBS:
        common = _common(registry=verb not in WITHOUT_REGISTRY)
        importlib.import_module(f"portguard.cli.{verb}").register(verbs, common)
    return parser


def main(argv: Sequence[str] | None = None, *, early: "Early | None" = None) -> int:
    """The command line's exit code; EARLY: what a busy check or why began (host/prefetch.py)."""
    argv = sys.argv[1:] if argv is None else argv

    def command() -> int:
        args = build_parser(argv).parse_args(argv)
        args.early = early
        handler: Handler = args.handler
        return handler(args)

    return shielded(command, debug="--debug" in argv)

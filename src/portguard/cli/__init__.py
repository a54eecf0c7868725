"""The command line: argparse verbs -> the core -> an exit code. Errors are one line."""

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from portguard import __version__
from portguard.errors import Exit, PortguardError, UsageError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad command lines with sysexits' USAGE, as one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        type=Path,
        metavar="PATH",
        help="registry root directory or file (default: /etc/portguard)",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    # Each verb loads only its own modules, when it runs.
    from portguard.cli import audit, check, dropin, init, lint, reserve, why  # noqa: PLC0415

    parser = _Parser(prog="portguard", description="Guard systemd units' ports.")
    parser.add_argument("--version", action="version", version=f"portguard {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    verbs.required = True
    check.register(verbs, _common())
    why.register(verbs, _common())
    audit.register(verbs, _common())
    lint.register(verbs, _common())
    init.register(verbs, _common())
    dropin.register(verbs, _common())
    reserve.register(verbs, _common())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
    except PortguardError as exc:
        _say(f"portguard: {exc.message}")
        if exc.hint:
            _say(f"portguard: hint: {exc.hint}")
        return int(exc.exit_code)
    except SystemExit as exc:  # --help and --version end through argparse's exit()
        return exc.code if isinstance(exc.code, int) else int(Exit.OK)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head`: not an error; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(Exit.OK)
    except Exception as exc:  # the last line of defence against tracebacks
        if debug:
            import traceback  # noqa: PLC0415 - only for --debug: it costs ~14 ms to load

            traceback.print_exc()
        _say(f"portguard: internal error: {type(exc).__name__}: {exc} (a bug; rerun with --debug)")
        return int(Exit.SOFTWARE)


def _say(line: str) -> None:
    print(line, file=sys.stderr)

"""`portguard audit`: every claim of the registry against the sockets present now."""

import argparse
from pathlib import Path
from typing import Any

from portguard.cli import exit_codes

EXITS = {
    0: "every claim is ok or idle",
    1: "drift: a claim is squatted or missing (--output is still written)",
    69: "the kernel's socket table cannot be read",
    73: "--output cannot be written (the previous file stays)",
    78: "the registry is missing, invalid or untrusted",
}


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "audit",
        parents=[common],
        help="every registry claim against reality: ok, squatted, missing, idle",
        description="Compare each claim of the registry with the sockets bound now.",
        epilog=exit_codes(EXITS),
    )
    parser.add_argument(
        "--format", choices=("text", "json", "prometheus"), default="text",
        help="text (default), json, or prometheus for node_exporter's textfile collector",
    )  # fmt: skip
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json",
        help="the same as --format json, as other commands spell it",
    )  # fmt: skip
    parser.add_argument(
        "--unregistered", action="store_true", help="also list listeners that no claim covers"
    )
    parser.add_argument(
        "--output", type=_file_path, metavar="PATH",
        help="replace PATH atomically with the rendering instead of printing it (for "
        "node_exporter's textfile collector); written on exit 0 and 1 alike, 73 if it cannot be",
    )  # fmt: skip
    parser.set_defaults(handler=run)


def _file_path(text: str) -> Path:
    # Path("") is ".", a directory: an empty value (an unset variable in a unit) is refused.
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def run(args: argparse.Namespace) -> int:
    from portguard.commands.audit import run as audit  # noqa: PLC0415

    return audit(
        args.registry,
        output=args.format,
        unregistered=args.unregistered,
        destination=args.output,
    )

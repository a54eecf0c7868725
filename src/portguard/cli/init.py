"""`portguard init`: a registry written from the listeners present now."""

import argparse
from typing import Any

from portguard.cli import exit_codes

EXITS = {0: "the registry was printed", 69: "the kernel's socket table cannot be read"}


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "init",
        parents=[common],
        help="write a registry (YAML, stdout) from the listeners present now",
        description="Map every listening socket to its unit and print a registry that "
        "passes 'portguard lint'. What cannot be mapped to a unit is written as a comment.",
        epilog=exit_codes(EXITS),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from portguard.commands.init import run as bootstrap  # noqa: PLC0415

    return bootstrap()

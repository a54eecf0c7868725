"""`portguard check [UNIT]`: the ExecStartPre= guard (the free path is hotpath.py's)."""

import argparse
from typing import Any


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "check",
        parents=[common],
        help="prove a unit's ports can be bound (run from ExecStartPre=)",
        description="Trial-bind the unit's registered ports; wait while its own remnants "
        "drain, fail at once when someone else holds one. Exit codes follow sysexits: "
        "0 free, 68 address not on this host, 69 held, 75 drain timeout, 77 denied, "
        "78 registry error.",
    )
    parser.add_argument(
        "unit", nargs="?", metavar="UNIT", help="default: the unit this process runs in"
    )
    parser.add_argument("--json", action="store_true", help="also print the verdict as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from portguard.commands.check import run as check  # noqa: PLC0415

    return check(args.unit, args.registry, as_json=args.json, debug=args.debug)

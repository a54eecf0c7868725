"""`portguard check [UNIT]`: the ExecStartPre= guard (the free path is freepath/check.py's)."""

import argparse
from typing import Any

from portguard.cli import exit_codes

EXITS = {
    0: "free, released (its own remnants drained) or unregistered (no claims)",
    68: "unassignable: an address is not on this host",
    69: "held: another owner holds a claimed port",
    75: "drain-timeout: its own remnants did not clear in time",
    77: "denied: the bind is refused by policy",
    78: "config-error: the registry is missing, invalid or untrusted",
}


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "check",
        parents=[common],
        help="prove a unit's ports can be bound (run from ExecStartPre=)",
        description="Trial-bind the unit's registered ports; wait while its own remnants "
        "drain, fail at once when someone else holds one. Exit codes follow sysexits.",
        epilog=exit_codes(EXITS),
    )
    parser.add_argument(
        "unit", nargs="?", metavar="UNIT", help="default: the unit this process runs in"
    )
    parser.add_argument("--json", action="store_true", help="also print the verdict as JSON")
    mirror = parser.add_argument_group(
        "how the unit binds", "written by the guard's drop-in from the unit's files; need root"
    )
    mirror.add_argument("--user", metavar="USER", help="probe as USER (default: root)")
    mirror.add_argument(
        "--caps",
        choices=("net_bind_service", "none"),
        help="whether USER may bind ports below 1024 (default: root may, others not)",
    )
    mirror.add_argument(
        "--socket-options",
        metavar="LIST",
        help="a .socket unit's bind by PID 1: comma-separated reuseaddr, reuseport, "
        "freebind, transparent, v6only; replaces the registry's options",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from portguard.commands.check import run as check  # noqa: PLC0415

    bind_options = [
        f"{flag}={value}"
        for flag, value in (
            ("--user", args.user), ("--caps", args.caps), ("--socket-options", args.socket_options)
        )
        if value is not None
    ]  # fmt: skip
    return check(args.unit, args.registry, as_json=args.json, debug=args.debug,
                 bind_options=bind_options, early=args.early)  # fmt: skip

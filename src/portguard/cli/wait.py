"""`portguard wait PORT[/PROTO]...`: until the ports could be bound, or (--listening) until
something listens on them."""

import argparse
from typing import Any

from portguard.cli import exit_codes

DEFAULT_TIMEOUT = "30s"  # the seed loop's 30 tries of a second
EXITS = {
    0: "the ports could be bound (with --listening: the right listener is there)",
    68: "an address is not on this host (EADDRNOTAVAIL): waiting cannot fix it",
    69: "--listening --unit: another owner listens there (a squatter); or the socket "
    "table cannot be read",
    75: "the timeout passed: the line names who still holds the port (or that nothing listens)",
    77: "the bind is refused (EACCES: a port below 1024 without the capability)",
    78: "--unit: the registry is missing, invalid or untrusted",
}


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "wait",
        parents=[common],
        help="wait until ports are free (or, --listening, taken by the right service)",
        description="Return as soon as every PORT could be bound with the options given, "
        "waking on the holder's exit, a socket's destruction or the last TIME-WAIT timer, "
        "and otherwise looking again every 50 ms. A bare PORT means TCP. Never signals "
        "anything.",
        epilog=exit_codes(EXITS),
    )
    parser.add_argument("ports", nargs="*", metavar="PORT[/PROTO]", help="e.g. 8080, 53/udp")
    parser.add_argument("--address", metavar="A", help="bind this address (default: every one)")
    parser.add_argument(
        "--timeout", metavar="SPAN", default=DEFAULT_TIMEOUT,
        help="give up after this systemd time span (default: 30s)",
    )  # fmt: skip
    parser.add_argument(
        "--reuseaddr", action=argparse.BooleanOptionalAction, default=None,
        help="bind with SO_REUSEADDR, so TIME-WAIT does not count (default: yes, as in the "
        "registry)",
    )  # fmt: skip
    parser.add_argument(
        "--unit", metavar="NAME", help="wait for what the registry claims for NAME instead"
    )
    parser.add_argument(
        "--listening", action="store_true",
        help="wait until something listens there (with --unit: that unit, or 69)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from portguard.cli.values import timespan_ms, wait_claims  # noqa: PLC0415
    from portguard.commands.wait import run as wait  # noqa: PLC0415
    from portguard.errors import UsageError  # noqa: PLC0415

    timeout_ms = timespan_ms("--timeout", args.timeout)
    if args.unit is not None and (args.ports or args.address):
        raise UsageError("--unit waits for the unit's registered ports: give no PORT or "
                         "--address with it")  # fmt: skip
    claims = (
        wait_claims(args.ports, args.address, reuseaddr=args.reuseaddr is not False)
        if args.unit is None
        else ()
    )
    return wait(claims, unit=args.unit, timeout_ms=timeout_ms, reuseaddr=args.reuseaddr,
                listening=args.listening, registry=args.registry, as_json=args.json)  # fmt: skip

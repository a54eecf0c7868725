"""`portguard why PORT[/PROTO]`: who holds a port, what the registry says, the clean fix."""

import argparse
from typing import Any

from portguard.cli import exit_codes

EXITS = {
    0: "nothing holds the port",
    1: "something holds it (named, with the fix)",
    69: "the kernel's socket table cannot be read",
    77: "--netns: the namespace is not readable (run as root)",
}


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "why",
        parents=[common],
        help="who holds a port, what the registry says, and the clean fix",
        description="Every socket on PORT (TCP and UDP unless /PROTO is given), its owner "
        "chain (process, unit, socket unit, login session or container), the registered "
        "owner and the fix. Never signals anything.",
        epilog=exit_codes(EXITS),
    )
    parser.add_argument("port", metavar="PORT[/PROTO]", help="e.g. 8080, 8080/tcp, 53/udp")
    parser.add_argument("--address", metavar="A", help="only what collides with a bind on A")
    parser.add_argument(
        "--netns", metavar="NAME|PID",
        help="look in another network namespace: a name from 'ip netns', a PID, or a path",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from portguard.cli.values import query  # noqa: PLC0415
    from portguard.commands.why import run as why  # noqa: PLC0415

    return why(query(args.port, args.address), netns_target=args.netns,
               registry=args.registry, as_json=args.json, early=args.early)  # fmt: skip

"""`portguard reserve [--apply]`: registered ports -> net.ipv4.ip_local_reserved_ports."""

import argparse
from typing import Any

from portguard.cli import exit_codes

EXITS = {
    0: "the merged list was printed (and with --apply, written)",
    69: "the kernel's list cannot be read",
    73: "--apply: the kernel's list cannot be written",
    77: "--apply: not permitted (run as root)",
    78: "the registry is missing, invalid or untrusted",
}


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "reserve",
        parents=[common],
        help="keep registered ports out of the kernel's ephemeral port choice",
        description="Compute net.ipv4.ip_local_reserved_ports from the registry merged "
        "with what is already set (nothing is ever dropped), print it on stdout (what it "
        "adds goes to stderr), and with --apply write it. A template's %i claims are left "
        "out: their port is known only per instance.",
        epilog=exit_codes(EXITS),
    )
    parser.add_argument("--apply", action="store_true", help="write the merged list to the kernel")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from portguard.commands.reserve import run as reserve  # noqa: PLC0415

    return reserve(args.registry, apply=args.apply)

"""`portguard dropin [--remove] [--reload] [--root DIR] UNIT...`: the guard drop-in for units."""

import argparse
from pathlib import Path
from typing import Any

from portguard.cli import exit_codes

EXITS = {
    0: "every drop-in written, unchanged, removed or absent",
    64: "a name is not a .service or .socket unit (nothing is written), --reload with "
    "--root, or this portguard cannot be a unit's guard",
    69: "systemd did not confirm the reload",
    73: "a file cannot be written or removed, or the file there is not portguard's",
    78: "a unit's start cannot be mirrored: it is not guarded",
}


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "dropin",
        parents=[common],
        help="add (or --remove) the guard drop-in for existing units",
        description="Write /etc/systemd/system/UNIT.d/50-portguard.conf, which runs this "
        "portguard's 'check' in ExecStartPre=+, with the arguments that make it bind as the "
        "unit will (read from the unit's files). Atomic and idempotent; --remove deletes only "
        "files portguard wrote. Prints one line per unit: written, unchanged, removed or "
        "absent. A unit whose start cannot be mirrored (no unit file, ExecStart= lines with "
        "different identities, DynamicUser=, ...) is not guarded; this portguard cannot be a "
        "unit's guard when it runs as python3 -m portguard or from a path others may write.",
        epilog=exit_codes(EXITS),
    )
    parser.add_argument("units", nargs="+", metavar="UNIT", help="a .service or .socket unit")
    parser.add_argument("--remove", action="store_true", help="remove the drop-in instead")
    parser.add_argument(
        "--reload", action="store_true", help="then ask systemd to reload (daemon-reload)"
    )
    parser.add_argument(
        "--root", type=Path, metavar="DIR", help="write below DIR (an image being built)"
    )
    parser.add_argument(
        "--guard",
        metavar="PATH",
        help="the portguard executable the drop-ins run (default: this one)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from portguard.commands.dropin import run as dropin  # noqa: PLC0415

    return dropin(
        args.units, remove=args.remove, reload=args.reload, root=args.root, guard=args.guard
    )

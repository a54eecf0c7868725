"""`portguard dropin [--remove] [--reload] [--root DIR] UNIT...`: the guard drop-in for units."""

import argparse
from pathlib import Path
from typing import Any


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "dropin",
        parents=[common],
        help="add (or --remove) the guard drop-in for existing units",
        description="Write /etc/systemd/system/UNIT.d/50-portguard.conf, which runs this "
        "portguard's 'check' in ExecStartPre=+, with the arguments that make it bind as the "
        "unit will (read from the unit's files). Atomic and idempotent; --remove deletes only "
        "files portguard wrote. Prints one line per unit: written, unchanged, removed or "
        "absent. Exit 0; 64 when a name is not a .service or .socket unit by systemd's rules "
        "(then nothing is written), for --reload with --root, or when this portguard cannot "
        "be a unit's guard (python3 -m portguard, a path others may write); 73 when a file "
        "cannot be written or removed, or the file there is not portguard's (it is left "
        "alone); 78 when a unit's start cannot be mirrored (no unit file, ExecStart= lines "
        "with different identities, DynamicUser=, ...: it is not guarded); 69 when systemd "
        "did not confirm the reload.",
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

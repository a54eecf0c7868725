"""Entry point: the free path of `check` first, with builtin modules only; then the full CLI."""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from portguard.host.prefetch import Early


def main() -> int:
    from portguard.freepath.check import run  # noqa: PLC0415 - nothing heavy before we need it

    argv = sys.argv[1:]
    code = run(argv)
    return code if code is not None else beyond_the_free_path(argv)


def beyond_the_free_path(argv: list[str]) -> int:
    """Everything but `check` on free ports (which the free path answered None to): the first
    start after a registry change, a busy port, every other verb."""
    from portguard.freepath.check import claimed_ports, cold_root, run  # noqa: PLC0415

    root = cold_root(argv)
    if root is not None:
        # The first start after a registry change: one guard of a boot storm compiles the
        # registry while the others wait for it, then all take the free path.
        from portguard.commands.trusted import compile_once  # noqa: PLC0415

        if compile_once(root):
            code = run(argv)
            if code is not None:
                return code
    # A busy port (or `why`): children read the socket table and ask systemd while the rest
    # loads (host/prefetch.py).
    from portguard.host.prefetch import Early  # noqa: PLC0415

    claimed = claimed_ports(argv)
    ports = claimed or why_ports(argv)
    # A held check looks at the listeners first (policy/guard.py); why at everything.
    early = Early(ports, listening=claimed is not None) if ports else None
    try:
        if claimed is not None:
            return held_check(argv, early)
        asked = why_args(argv) if ports else None
        if asked is not None:
            return plain_why(ports or [], *asked, early)
        from portguard.cli import main as full  # noqa: PLC0415

        return full(early=early)
    finally:
        if early is not None:
            early.close()


def held_check(argv: list[str], early: "Early | None") -> int:
    """A `check` whose command line the free path read whole (its registry compiled, its
    unit in it, its options valid) and found a port busy: judged and reported without the
    command line's parser and every verb's options (argparse is for --help and errors)."""
    from portguard.commands.check import run as check  # noqa: PLC0415
    from portguard.errors import shielded  # noqa: PLC0415
    from portguard.freepath.check import check_args  # noqa: PLC0415

    parsed = check_args(argv)
    assert parsed is not None  # claimed_ports read it
    root, unit, bind_options = parsed
    return shielded(lambda: check(unit, root, as_json=False, debug=False,
                                  bind_options=bind_options, early=early), debug=False)  # fmt: skip


def why_args(argv: list[str]) -> tuple[str | None, bool] | None:
    """(--registry, --json) of `why PORT[/PROTO]` followed by no other option; None for any
    other command line (argparse reads it, and says what is wrong with it)."""
    rest, registry, as_json = argv[2:], None, False
    while rest:
        option = rest.pop(0)
        if option == "--json" and not as_json:
            as_json = True
        elif option == "--registry" and registry is None and rest and rest[0][:1] not in "-":
            registry = rest.pop(0)
        else:
            return None
    return registry, as_json


def plain_why(
    ports: list[tuple[str, int]], registry: str | None, as_json: bool, early: "Early | None"
) -> int:
    """`why PORT[/PROTO]` (its PORTS), answered without argparse, as a held check is."""
    from pathlib import Path  # noqa: PLC0415

    from portguard.commands.why import run as why  # noqa: PLC0415
    from portguard.errors import shielded  # noqa: PLC0415
    from portguard.policy.diagnosis import Query  # noqa: PLC0415
    from portguard.registry.claims import Proto  # noqa: PLC0415

    query = Query(ports[0][1], tuple(Proto(proto) for proto, _ in ports), None)
    where = None if registry is None else Path(registry)
    return shielded(lambda: why(query, netns_target=None, registry=where, as_json=as_json,
                                early=early), debug=False)  # fmt: skip


def why_ports(argv: list[str]) -> list[tuple[str, int]] | None:
    """The ports of a `why PORT[/PROTO] ...` command line, as cli/values.query reads them (a
    bare port: TCP and UDP); None for anything else, and for --netns (the census runs in
    there). Read here, before argparse loads, so the census begins while it does."""
    if len(argv) < 2 or argv[0] != "why" or any(a.startswith("--netns") for a in argv):
        return None
    port, slash, proto = argv[1].partition("/")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    protos = [proto.lower()] if slash else ["tcp", "udp"]
    return [(p, int(port)) for p in protos] if set(protos) <= {"tcp", "udp"} else None


if __name__ == "__main__":
    sys.exit(main())

"""Entry point: the free path of `check` first, with builtin modules only; then the full CLI."""

import sys


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

    ports = claimed_ports(argv) or why_ports(argv)
    early = Early(ports) if ports else None
    from portguard.cli import main as full  # noqa: PLC0415

    try:
        return full(early=early)
    finally:
        if early is not None:
            early.close()


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

"""The entry point (__main__.py): what it reads of a command line before argparse loads."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portguard.__main__ import why_args, why_ports
from portguard.cli import build_parser
from portguard.cli.values import query
from portguard.errors import UsageError


@pytest.mark.parametrize(
    ("argv", "ports"),
    [
        (["why", "8080"], [("tcp", 8080), ("udp", 8080)]),
        (["why", "53/udp", "--json"], [("udp", 53)]),
        (["why", "53/UDP"], [("udp", 53)]),
        (["why", "8080/tcp", "--netns", "x"], None),  # the census runs in there, later
        (["why", "8080/sctp"], None),
        (["why", "0"], None),
        (["why", "65536"], None),
        (["why", "٣"], None),
        (["why"], None),
        (["check", "8080"], None),
    ],
)
def test_why_ports_read_as_the_query_does(
    argv: list[str], ports: list[tuple[str, int]] | None
) -> None:
    assert why_ports(argv) == ports


@given(st.text(alphabet="0123456789/tcpudpTCPUDPx٣ -", max_size=12))
def test_why_ports_are_the_querys_ports(text: str) -> None:
    """The census begun early must be of the ports `why` then asks about, or none at all."""
    try:
        read = query(text)
    except UsageError:
        read = None
    early = why_ports(["why", text])
    if early is not None:
        assert read is not None
        assert early == [(str(proto), read.port) for proto in read.protos]


@pytest.mark.parametrize(
    ("argv", "read"),
    [
        (["why", "8080"], (None, False)),
        (["why", "8080/tcp", "--json"], (None, True)),
        (["why", "8080", "--registry", "/etc/pg", "--json"], ("/etc/pg", True)),
        (["why", "8080", "--json", "--json"], None),  # argparse takes it; not worth a path
        (["why", "8080", "--registry"], None),  # argparse says what is missing
        (["why", "8080", "--registry", "--json"], None),
        (["why", "8080", "--address", "::1"], None),
        (["why", "8080", "--debug"], None),
        (["why", "8080", "-h"], None),
    ],
)
def test_why_args_are_the_plain_command_lines(
    argv: list[str], read: tuple[str | None, bool] | None
) -> None:
    assert why_args(argv) == read


@given(st.lists(st.sampled_from(["--json", "--registry", "/r", "-r", "--address", "::1",
                                 "--netns", "x", "--debug", "--", "8"]), max_size=5))  # fmt: skip
def test_why_args_read_what_argparse_reads(rest: list[str]) -> None:
    """Whatever `why` command line the entry answers without argparse, argparse reads alike:
    the same registry and --json, and no other option."""
    argv = ["why", "8080", *rest]
    plain = why_args(argv)
    if plain is None:
        return
    args = build_parser(argv).parse_args(argv)
    registry = None if args.registry is None else str(args.registry)
    assert (registry, args.json) == plain
    assert (args.address, args.netns, args.debug, args.port) == (None, None, False, "8080")

"""The entry point (__main__.py): what it reads of a command line before argparse loads."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portguard.__main__ import why_ports
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

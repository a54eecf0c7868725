"""What a user types, read by cli/values.py: a port query, an address, ports to wait for,
a time span; a UsageError (64) naming the argument for anything else."""

import re

import pytest

from portguard.cli.values import query, timespan_ms, wait_claims
from portguard.errors import Exit, UsageError
from portguard.registry.claims import Proto


@pytest.mark.parametrize(
    ("text", "address", "protos", "shown"),
    [
        ("8080", None, (Proto.TCP, Proto.UDP), "8080"),
        ("8080/tcp", None, (Proto.TCP,), "8080/tcp"),
        ("53/UDP", None, (Proto.UDP,), "53/udp"),
        ("8080/tcp", "127.0.0.1", (Proto.TCP,), "127.0.0.1:8080/tcp"),
        ("8080/tcp", "[::1]", (Proto.TCP,), "[::1]:8080/tcp"),
    ],
)
def test_query_parses_port_proto_and_address(
    text: str, address: str | None, protos: tuple[Proto, ...], shown: str
) -> None:
    read = query(text, address)
    assert read.protos == protos
    assert str(read) == shown
    assert [c.proto for c in read.claims()] == list(protos)


@pytest.mark.parametrize(
    ("text", "address", "message"),
    [
        ("0", None, "a port from 1 to 65535"),
        ("65536/tcp", None, "a port from 1 to 65535"),
        ("http", None, "a port from 1 to 65535"),
        ("٣/tcp", None, "a port from 1 to 65535"),  # a digit, but not an ASCII one
        ("80/sctp", None, "the protocol is tcp or udp"),
        ("80", "localhost", "is not an IPv4 or IPv6 address"),
    ],
)
def test_query_refuses_what_is_not_a_port(text: str, address: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        query(text, address)
    assert caught.value.exit_code is Exit.USAGE


@pytest.mark.parametrize(
    ("texts", "address", "message"),
    [
        ([], None, "give at least one PORT[/PROTO], or --unit NAME"),
        (["80/sctp"], None, "'80/sctp': unknown protocol"),
        (["127.0.0.1:80"], None, "give the address with --address, the port alone here"),
        (["%i/tcp"], None, "%i is a template's port; give a number"),
        (["80"], "nowhere", "--address 'nowhere' is not an IPv4 or IPv6 address"),
    ],
)
def test_wait_claims_refuse_what_is_not_a_port(
    texts: list[str], address: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        wait_claims(texts, address, reuseaddr=True)


def test_wait_claims_bind_the_address_given() -> None:
    [tcp, udp] = wait_claims(["8080", "53/udp"], "[::1]", reuseaddr=False)
    assert (tcp.proto, tcp.first, str(tcp.address), tcp.reuseaddr) == (
        Proto.TCP,
        8080,
        "::1",
        False,
    )
    assert (udp.proto, udp.first) == (Proto.UDP, 53)


def test_a_time_span_names_its_option() -> None:
    assert timespan_ms("--timeout", "1min 30s") == 90_000
    with pytest.raises(UsageError, match=r"^--timeout: "):
        timespan_ms("--timeout", "soon")

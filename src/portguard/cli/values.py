"""What a user types, read into the core's values before the core runs: one function per
kind of argument, each a UsageError (64) naming what it got and what it expected. Below cli/
nothing reads a command line."""

import ipaddress
from collections.abc import Sequence
from dataclasses import replace

from portguard.errors import UsageError
from portguard.policy.diagnosis import Query
from portguard.registry.claims import (
    Claim,
    ClaimSyntaxError,
    IPAddress,
    Proto,
    make_claim,
    parse_listen,
)
from portguard.registry.timespan import TimespanError, parse_timespan_ms


def address(text: str) -> IPAddress:
    """--address A: IPv4, or IPv6 with or without brackets."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise UsageError(f"--address '{text}' is not an IPv4 or IPv6 address") from None


def query(text: str, address_text: str | None = None) -> Query:
    """`why`'s PORT[/PROTO] (a bare port: TCP and UDP) and its --address."""
    port_text, slash, proto_text = text.partition("/")
    try:
        protos = (Proto(proto_text.lower()),) if slash else (Proto.TCP, Proto.UDP)
    except ValueError:
        raise UsageError(f"'{text}': the protocol is tcp or udp") from None
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"'{text}': expected PORT[/PROTO], a port from 1 to 65535")
    where = address(address_text) if address_text is not None else None
    return Query(int(port_text), protos, where)


def wait_claims(
    texts: Sequence[str], address_text: str | None, *, reuseaddr: bool
) -> tuple[Claim, ...]:
    """`wait`'s PORT[/PROTO]... on --address (a bare port: TCP), bound as the options say."""
    if not texts:
        raise UsageError("give at least one PORT[/PROTO], or --unit NAME")
    where = address(address_text) if address_text is not None else None
    claims = []
    for text in texts:
        try:
            parts = parse_listen(text)
        except ClaimSyntaxError as exc:
            raise UsageError(
                f"'{text}': {exc.message} (expected PORT[/PROTO], e.g. 8080/tcp)"
            ) from None
        if parts.address is not None:
            raise UsageError(f"'{text}': give the address with --address, the port alone here")
        if parts.first is None:
            raise UsageError(f"'{text}': %i is a template's port; give a number")
        claims.append(make_claim(replace(parts, address=where), v6only=False,
                                 reuseaddr=reuseaddr, reuseport=False, instance=None))  # fmt: skip
    return tuple(claims)


def timespan_ms(option: str, text: str) -> int:
    """A systemd time span (`30s`, `1min 30s`, `500ms`) in milliseconds."""
    try:
        return parse_timespan_ms(text)
    except TimespanError as exc:
        raise UsageError(f"{option}: {exc}") from None

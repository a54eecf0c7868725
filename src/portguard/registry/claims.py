"""What a unit claims: address, port range and protocol, and when two claims collide.

Pure and stdlib-only: the hot path of `check` parses claims with this module.
"""

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeAlias

from portguard.errors import InvalidValue

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

TEMPLATE_PORT = "%i"


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class Claim:
    """One listen claim with the socket options the service binds it with.

    `address` None means every address, IPv4 and IPv6. `[::]` is IPv6's wildcard and,
    unless `v6only`, IPv4's too, as a dual-stack socket is on Linux by default.
    """

    proto: Proto
    first: int
    last: int
    address: IPAddress | None = None
    v6only: bool = False
    reuseaddr: bool = True
    reuseport: bool = False
    freebind: bool = False  # IP_FREEBIND: binds an address this host does not have (yet)
    # A pool the service binds on demand, one port per call or session: how many of its
    # ports must be bindable for it to serve (min-free). None: every port is bound at start.
    pool: int | None = None

    @property
    def ports(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        ports = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        if self.address is None:
            return f"{ports}/{self.proto}"
        return f"{host_text(self.address)}:{ports}/{self.proto}"


def host_text(address: IPAddress) -> str:
    """ADDRESS as a registry writes it before `:PORT`: IPv6 in brackets, and a v4-mapped one
    as ::ffff:a.b.c.d (Python's own text, ::ffff:7f00:1, is not what anyone typed)."""
    if address.version == 4:
        return str(address)
    mapped = address.ipv4_mapped
    return f"[::ffff:{mapped}]" if mapped is not None else f"[{address}]"


class ClaimSyntaxError(InvalidValue):
    """A listen string that is not a claim; `offset` is where in the string it goes wrong."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class ListenParts:
    """A listen string split into its parts, before the template port is known."""

    address: IPAddress | None
    first: int | None  # None: the port is %i
    last: int | None
    proto: Proto


def parse_listen(text: str) -> ListenParts:
    """Parse `PORT`, `PORT/PROTO`, `ADDR:PORT/PROTO`, `[V6]:PORT/PROTO`, `A-B/PROTO`, `%i/PROTO`."""
    body, slash, proto_text = text.partition("/")
    proto = _parse_proto(proto_text, len(body) + 1) if slash else Proto.TCP
    if not body:
        raise ClaimSyntaxError("expected a port such as 8080/tcp", 0)
    address, port_text, port_offset = _split_address(body)
    if port_text == TEMPLATE_PORT:
        return ListenParts(address, None, None, proto)
    first, last = _parse_ports(port_text, port_offset)
    if address is not None:
        _check_address(address, proto)
    return ListenParts(address, first, last, proto)


def _parse_proto(text: str, offset: int) -> Proto:
    try:
        return Proto(text.lower())
    except ValueError:
        raise ClaimSyntaxError(f"unknown protocol '{text}' (expected tcp or udp)", offset) from None


def _split_address(body: str) -> tuple[IPAddress | None, str, int]:
    if body.startswith("["):
        close = body.find("]")
        if close < 0:
            raise ClaimSyntaxError("'[' opens an IPv6 address but no ']' closes it", 0)
        if body[close + 1 : close + 2] != ":":
            raise ClaimSyntaxError("expected ':PORT' after ']'", close + 1)
        try:
            address = ipaddress.IPv6Address(body[1:close])
        except ValueError:
            raise ClaimSyntaxError(f"'{body[1:close]}' is not an IPv6 address", 1) from None
        return address, body[close + 2 :], close + 2
    head, colon, tail = body.rpartition(":")
    if not colon:
        return None, body, 0
    if ":" in head:
        raise ClaimSyntaxError("an IPv6 address goes in brackets, e.g. [::1]:9090/tcp", 0)
    try:
        return ipaddress.IPv4Address(head), tail, len(head) + 1
    except ValueError:
        raise ClaimSyntaxError(
            f"'{head}' is not an IPv4 address (expected e.g. 127.0.0.1; host names are not "
            "allowed, the kernel binds addresses)",
            0,
        ) from None


def _parse_ports(text: str, offset: int) -> tuple[int, int]:
    first_text, dash, last_text = text.partition("-")
    first = _parse_port(first_text, offset)
    if not dash:
        return first, first
    last = _parse_port(last_text, offset + len(first_text) + 1)
    if last < first:
        raise ClaimSyntaxError(
            f"range {first}-{last} is reversed (expected the lower port first: {last}-{first})",
            offset,
        )
    return first, last


def _parse_port(text: str, offset: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise ClaimSyntaxError(f"'{text}' is not a port (expected a number 1-65535)", offset)
    # Bounded before int(): a 5,000-digit string exceeds int()'s conversion limit.
    port = int(text) if len(text) <= 10 else None
    if port is None or not 1 <= port <= 65535:
        shown = port if port is not None else f"{text[:10]}..."
        raise ClaimSyntaxError(f"port {shown} is out of range (expected 1-65535)", offset)
    return port


def _check_address(address: IPAddress, proto: Proto) -> None:
    if proto is Proto.TCP and address.is_multicast:
        raise ClaimSyntaxError(f"{address} is a multicast address: TCP cannot listen on it", 0)
    if proto is Proto.TCP and address == ipaddress.IPv4Address("255.255.255.255"):
        raise ClaimSyntaxError("255.255.255.255 is the broadcast address: TCP cannot listen on it")


def parse_port_text(text: str) -> tuple[int, int]:
    """A template instance used as a port: `6379` or `9000-9010`."""
    return _parse_ports(text, 0)


def make_claim(
    parts: ListenParts,
    *,
    v6only: bool,
    reuseaddr: bool,
    reuseport: bool,
    instance: str | None,
    freebind: bool = False,
    pool: int | None = None,
) -> Claim:
    """A concrete claim; `instance` fills a `%i` port and must then be a port number."""
    if parts.first is None or parts.last is None:
        if instance is None:
            raise ClaimSyntaxError("%i needs a template instance (unit name@INSTANCE.service)")
        first, last = parse_port_text(instance)
    else:
        first, last = parts.first, parts.last
    return Claim(parts.proto, first, last, parts.address, v6only, reuseaddr, reuseport, freebind,
                 pool)  # fmt: skip


def shares(a: Claim, b: Claim) -> bool:
    """Whether the kernel lets two sockets bound with these options hold the same port at
    once: both SO_REUSEPORT (for sockets of one uid, which a registry cannot see), or both
    UDP with SO_REUSEADDR (mDNS responders side by side)."""
    if a.proto is not b.proto:
        return False
    if a.reuseport and b.reuseport:
        return True
    return a.proto is Proto.UDP and a.reuseaddr and b.reuseaddr


# --- overlap: the kernel's view of which binds collide -------------------------------------

Family: TypeAlias = Literal[4, 6]
Reach: TypeAlias = tuple[Family, IPAddress | None]  # None: that family's wildcard


def is_wildcard(address: IPAddress) -> bool:
    """0.0.0.0 or ::, exactly. Not `is_unspecified`: from Python 3.13 on that is also true of
    ::ffff:0.0.0.0, an IPv4-mapped address that binds IPv4's wildcard only."""
    return int(address) == 0


def reach(claim: Claim) -> tuple[Reach, ...]:
    """The (family, address) pairs a claim's bind occupies; None is the family's wildcard."""
    address = claim.address
    if address is None:
        return ((4, None), (6, None))
    if address.version == 4:
        return ((4, None if is_wildcard(address) else address),)
    assert isinstance(address, ipaddress.IPv6Address)
    if is_wildcard(address):
        return ((6, None),) if claim.v6only else ((6, None), (4, None))
    mapped = address.ipv4_mapped
    if mapped is not None and not claim.v6only:  # ::ffff:0.0.0.0 binds IPv4's wildcard
        return ((4, None if is_wildcard(mapped) else mapped),)
    return ((6, address),)


def _reaches_meet(a: Reach, b: Reach) -> bool:
    return a[0] == b[0] and (a[1] is None or b[1] is None or a[1] == b[1])


def overlaps(a: Claim, b: Claim) -> bool:
    """Whether binding both claims at once would collide (same proto, ports, reachable address)."""
    if a.proto != b.proto or a.last < b.first or b.last < a.first:
        return False
    return any(_reaches_meet(x, y) for x in reach(a) for y in reach(b))

"""Who is in the way of a unit's bind: the sockets that may be why the kernel refused it,
and what each is to the unit (someone else's, held for it, its own remnant, TIME-WAIT)."""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, auto

from portguard.host.probe import Bind
from portguard.policy.owners import Holding, OwnerKind
from portguard.registry.claims import Claim, overlaps, reach


@dataclass(frozen=True, slots=True)
class Guarded:
    """What `check` guards: one unit's concrete claims and its wait budget."""

    unit: str
    claims: tuple[Claim, ...]
    wait_ms: int
    via: tuple[str, ...] = ()
    team: str | None = None
    uid: int | None = None  # who binds: SO_REUSEPORT shares only between sockets of one uid


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait for these PIDs to exit, or until UNTIL_MS since the check began, then look again."""

    pids: tuple[int, ...]
    until_ms: int
    blocker: Holding


class Role(Enum):
    FOREIGN = auto()  # someone else: fail at once
    DELEGATED = auto()  # a socket unit in `via` holds it for the service
    DRAINING = auto()  # the unit's own leftover, or a `via` service handing over
    TIME_WAIT = auto()


def blockers(bind: Bind, holdings: Iterable[Holding], uid: int | None) -> list[Holding]:
    """The sockets that may be why BIND was refused, the likeliest first.

    The probe already knows the port is refused; this only names who by, from a socket
    table that does not show all the kernel weighs (a socket's options are read from its
    holder when we may; a TIME-WAIT's never):
    - a socket that is not a TCP listener blocks a bind that sets SO_REUSEADDR only if it
      did not set it too, and none of the same uid blocks when both set SO_REUSEPORT;
    - a connection of a dual-stack IPv6 socket, shown as [::1]:P, still blocks IPv4's
      wildcard when its socket was bound to [::] (a [::] listener accepted it, or it is
      connected UDP) or connect() chose its port.
    So: the sockets that surely block; then TIME-WAIT, which runs out on its own, so the
    service waits rather than failing a start the kernel may allow in a moment; then the
    sockets that may block.
    """
    claim = bind.claim
    target = Claim(claim.proto, bind.port, bind.port, ipaddress.ip_address(bind.host),
                   v6only=bind.v6only)  # fmt: skip
    wildcard_v4 = (4, None) in reach(target)
    sure: list[Holding] = []
    time_wait: list[Holding] = []
    unsure: list[Holding] = []
    for holding in holdings:
        occupant = holding.occupant
        if occupant.proto != claim.proto or occupant.port != bind.port:
            continue
        strict = overlaps(occupant.as_claim(), target)
        if not strict and not (wildcard_v4 and _dual_connection(holding)):
            continue
        if occupant.is_time_wait:
            time_wait.append(holding)
            continue
        blocks = _blocks(holding, claim, uid)
        if blocks and (strict or holding.options is not None):
            sure.append(holding)
        elif blocks is not False:
            unsure.append(holding)
    for tier in (sure, time_wait, unsure):
        if tier:
            return sorted(tier, key=lambda h: h.occupant.state not in _NOT_CONNECTIONS)
    return []


_NOT_CONNECTIONS = ("LISTEN", "UNCONN")


def _blocks(holding: Holding, claim: Claim, uid: int | None) -> bool | None:
    """Whether a socket on the claim's address blocks its bind; None: cannot be known."""
    options = holding.options
    if claim.reuseport and (options is None or uid is None):
        return None  # it may be one of the service's own SO_REUSEPORT group
    if claim.reuseport and options and options.reuseport and holding.occupant.uid == uid:
        return False
    if holding.occupant.state == "LISTEN" or not claim.reuseaddr:
        return True
    return None if options is None else not options.reuseaddr


def _dual_connection(holding: Holding) -> bool:
    """A connection (TCP, or connected UDP) on an IPv6 address of a socket that may be
    dual-stack (sock_diag does not say v6only for connections; the holder may)."""
    occupant = holding.occupant
    address = occupant.address
    return (
        occupant.state not in _NOT_CONNECTIONS
        and isinstance(address, ipaddress.IPv6Address)
        and address.ipv4_mapped is None
        and not (holding.options and holding.options.v6only)
    )


def role(holding: Holding, guarded: Guarded) -> Role:
    owner = holding.owner
    if owner.kind is OwnerKind.TIME_WAIT:
        return Role.TIME_WAIT
    if owner.kind is OwnerKind.SELF or owner.unit == guarded.unit:
        return Role.DRAINING
    if owner.unit in guarded.via:
        return Role.DELEGATED if owner.kind is OwnerKind.SOCKET else Role.DRAINING
    return Role.FOREIGN

"""`portguard init`'s judgement, pure: which unit each listener is registered for, the
fewest claims that cover its sockets, and what is left out and why (no unit, a port picked
at random at each start, a clash with a claim given already). commands/init.py gathers the
facts and writes the YAML.
"""

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from portguard.host.occupants import Occupant
from portguard.host.units import UnitFacts
from portguard.policy.kinds import UNKNOWN_LEFT_OUT, kind_of
from portguard.policy.owners import Holding, Owner, OwnerKind
from portguard.policy.report import describe_owner
from portguard.policy.volatile import volatile_reason
from portguard.registry.claims import Claim, IPAddress, Proto, is_wildcard, overlaps, shares
from portguard.registry.localports import LocalPorts
from portguard.registry.unitname import UnitNameKind, unit_name_kind

# Linux's default net.ipv4.ip_local_port_range, for when the running kernel's cannot be read.
DEFAULT_EPHEMERAL = (32768, 60999)


@dataclass(frozen=True, slots=True)
class Capture:
    """What a registry is written from: attributed listeners and what systemd said of units."""

    holdings: tuple[Holding, ...]
    facts: Mapping[str, UnitFacts] = field(default_factory=dict)
    gaps: tuple[str, ...] = ()
    local_ports: LocalPorts | None = None
    statd_ports: frozenset[int] = frozenset()  # what /etc/nfs.conf pins rpc.statd to
    host: str = "localhost"
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    redirected: tuple[str, ...] = ()  # what NAT rules take, one comment line each
    # The pools daemons' own configuration names, by unit (host/daemonconf.py): claimed for
    # a unit found listening, and covering its sockets inside them.
    pools: Mapping[str, tuple[Claim, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedUnit:
    name: str
    claims: tuple[Claim, ...]
    via: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The registry's units, and a comment line for each listener left out of them."""

    units: tuple[PlannedUnit, ...]
    unmapped: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    clients: int = 0
    volatile: tuple[str, ...] = ()  # ports picked at random at each start


# --- which unit a listener is registered for -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    unit: str
    via: str | None = None  # the socket unit that holds the port for the service


def placement(owner: Owner, facts: Mapping[str, UnitFacts]) -> Placement | None:
    """The registry key for a listener of OWNER, or None when no system unit owns it."""
    if owner.unit is None:
        return None
    if owner.kind is OwnerKind.SERVICE or (
        owner.kind is OwnerKind.CONTAINER and kind_of(owner).left_out(owner) is None
    ):
        return Placement(owner.unit)
    if owner.kind is not OwnerKind.SOCKET:
        return None
    known = facts.get(owner.unit)
    activates = owner.activates or (known.triggers if known else ())
    # One plain service: the port is that service's, held for it by PID 1. A template
    # (Accept=yes starts an instance per connection), several or none: the socket unit's own.
    service = activates[0] if len(activates) == 1 else ""
    if service.endswith(".service") and unit_name_kind(service) is not UnitNameKind.TEMPLATE:
        return Placement(service, owner.unit)
    return Placement(owner.unit)


def is_client(occupant: Occupant, ephemeral: tuple[int, int]) -> bool:
    """A UDP socket that is connected, or bound to a port the kernel hands out to outgoing
    traffic, is a client's; a listening TCP socket never is.
    """
    if occupant.proto is Proto.TCP:
        return False
    return occupant.peer is not None or ephemeral[0] <= occupant.port <= ephemeral[1]


def _is_listener(occupant: Occupant) -> bool:
    """What the census of listeners returns; anything else (TIME-WAIT, a connection) is not."""
    return occupant.state == ("LISTEN" if occupant.proto is Proto.TCP else "UNCONN")


# --- sockets -> claims ---------------------------------------------------------------------

_ANY4 = ipaddress.IPv4Address(0)
_ANY6 = ipaddress.IPv6Address(0)


def merge_claims(sockets: Iterable[Occupant], shared: Iterable[int] = ()) -> tuple[Claim, ...]:
    """The fewest claims that cover SOCKETS, one set of binds per protocol and port, sorted.
    SHARED: UDP ports seen held by two sockets at once, which share them."""
    binds: dict[tuple[Proto, int], set[tuple[IPAddress, bool]]] = {}
    for socket in sockets:
        v6only = socket.v6only and socket.address.version == 6
        binds.setdefault((socket.proto, socket.port), set()).add((socket.address, v6only))
    claims: list[Claim] = []
    sharing = set(shared)
    for (proto, port), found in binds.items():
        claims.extend(_port_claims(proto, port, found, proto is Proto.UDP and port in sharing))
    return tuple(sorted(claims, key=claim_order))


def shared_udp_ports(sockets: Iterable[Occupant]) -> set[int]:
    """UDP ports two sockets hold at once on overlapping addresses: the kernel let them share,
    so each set SO_REUSEADDR or SO_REUSEPORT (which one, sock_diag does not say)."""
    seen: dict[int, list[Claim]] = {}
    shared = set()
    for socket in sockets:
        if socket.proto is not Proto.UDP:
            continue
        claim = socket.as_claim()
        if any(overlaps(claim, other) for other in seen.get(socket.port, [])):
            shared.add(socket.port)
        seen.setdefault(socket.port, []).append(claim)
    return shared


def _port_claims(
    proto: Proto, port: int, binds: set[tuple[IPAddress, bool]], shared: bool
) -> list[Claim]:
    def claim(address: IPAddress | None = None, *, v6only: bool = False) -> Claim:
        # A shared UDP port: the probe sets both options, so it binds beside the others
        # whichever of the two they set, as the service did.
        return Claim(proto, port, port, address, v6only=v6only, reuseaddr=shared or
                     proto is Proto.TCP, reuseport=shared)  # fmt: skip

    # A dual-stack [::], or 0.0.0.0 with a v6only [::]: exactly the pair a bare claim binds.
    dual = (_ANY6, False) in binds or {(_ANY4, False), (_ANY6, True)} <= binds
    if dual:
        return [claim()]
    wide = [claim(_ANY4)] if (_ANY4, False) in binds else []
    if (_ANY6, True) in binds:
        wide.append(claim(_ANY6, v6only=True))
    families = {c.address.version for c in wide if c.address is not None}
    # A specific address inside a wildcard of the same family is covered by it already.
    specific = {
        claim(address) for address, _ in binds
        if not is_wildcard(address) and address.version not in families
    }  # fmt: skip
    return wide + sorted(specific, key=claim_order)


def claim_order(claim: Claim) -> tuple[str, int, int, int]:
    if claim.address is None:
        return (claim.proto, claim.first, 0, 0)
    return (claim.proto, claim.first, claim.address.version, int(claim.address))


def claim_text(claim: Claim) -> str | dict[str, Any]:
    """A listen entry: text, or the mapping form for a v6only wildcard or a shared UDP port."""
    entry: dict[str, Any] = {"port": str(claim)}
    if claim.pool is not None:
        entry["pool"] = True
        if claim.pool != 1:
            entry["min-free"] = claim.pool
    if claim.v6only and claim.address == _ANY6:
        entry["v6only"] = True
    if claim.proto is Proto.UDP and claim.reuseport:
        entry["reuseaddr"] = entry["reuseport"] = True
    return entry if len(entry) > 1 else str(claim)


def _shown(claim: Claim) -> str:
    text = claim_text(claim)
    if isinstance(text, str):
        return text
    return f"{claim} ({', '.join(key for key in text if key != 'port')})"


# --- the plan ------------------------------------------------------------------------------


def plan(capture: Capture) -> Plan:
    """Every listener of CAPTURE placed under its unit, or turned into a comment line."""
    ephemeral = capture.local_ports.ephemeral if capture.local_ports else DEFAULT_EPHEMERAL
    bound = [h for h in capture.holdings if _is_listener(h.occupant)]
    listeners = [h for h in bound if not is_client(h.occupant, ephemeral)]
    shared = shared_udp_ports(h.occupant for h in listeners)
    by_unit: dict[str, list[Occupant]] = {}
    via: dict[str, set[str]] = {}
    unmapped: dict[str, list[Occupant]] = {}
    volatile: dict[str, list[Occupant]] = {}
    for holding in listeners:
        where = placement(holding.owner, capture.facts)
        if where is None:
            unmapped.setdefault(_left_out(holding.owner), []).append(holding.occupant)
            continue
        port = holding.occupant.port
        reason = volatile_reason(
            where.unit, port, local_ports=capture.local_ports, pinned=capture.statd_ports
        )
        if reason is not None:
            volatile.setdefault(f"{where.unit}: {reason}", []).append(holding.occupant)
            continue
        if any(overlaps(holding.occupant.as_claim(), p) for p in capture.pools.get(where.unit, ())):
            continue  # a port its pool covers: one it drew on demand
        by_unit.setdefault(where.unit, []).append(holding.occupant)
        if where.via:
            via.setdefault(where.unit, set()).add(where.via)
    units, conflicts = _without_overlaps(by_unit, via, capture.facts, shared, capture.pools)
    return Plan(
        units=units,
        unmapped=_notes(unmapped),
        conflicts=conflicts,
        clients=len(bound) - len(listeners),
        volatile=_notes(volatile),
    )


def _notes(groups: Mapping[str, list[Occupant]]) -> tuple[str, ...]:
    """One comment line per claim of each group, `CLAIM: WHY`, in port order."""
    notes = [
        (claim_order(claim), f"{_shown(claim)}: {what}")
        for what, sockets in groups.items()
        for claim in merge_claims(sockets)
    ]
    return tuple(line for _, line in sorted(notes))


def _without_overlaps(
    by_unit: Mapping[str, list[Occupant]],
    via: Mapping[str, set[str]],
    facts: Mapping[str, UnitFacts],
    shared: set[int],
    pools: Mapping[str, tuple[Claim, ...]],
) -> tuple[tuple[PlannedUnit, ...], tuple[str, ...]]:
    """Units in name order; a claim overlapping one already given to another unit becomes a
    comment, since the registry would otherwise be invalid (lint's rule: unless via excuses it).
    """
    given: list[tuple[str, Claim]] = []
    units: list[PlannedUnit] = []
    conflicts: list[str] = []
    for name in sorted(by_unit):
        own_via = tuple(sorted(via.get(name, ())))
        kept: list[Claim] = []
        for claim in [*merge_claims(by_unit[name], shared), *pools.get(name, ())]:
            clash = next(
                (
                    (other, earlier) for other, earlier in given
                    if overlaps(earlier, claim) and not shares(earlier, claim)
                    and other not in own_via and name not in via.get(other, ())
                ),
                None,
            )  # fmt: skip
            if clash is None:
                kept.append(claim)
                continue
            conflicts.append(
                f"{_shown(claim)}: held by {name} too, but it overlaps {_shown(clash[1])} "
                f"given to {clash[0]} above, left out (give one of them another port, or "
                "list one in the other's 'via')"
            )
        given.extend((name, claim) for claim in kept)
        if kept:
            units.append(PlannedUnit(name, tuple(kept), own_via, _description(name, facts)))
    return tuple(units), tuple(conflicts)


def _left_out(owner: Owner) -> str:
    reason = kind_of(owner).left_out(owner) or UNKNOWN_LEFT_OUT
    who = describe_owner(owner)
    if reason == UNKNOWN_LEFT_OUT and owner.user:
        who += f", user {owner.user}"
    return f"{who} — {reason}"


def _description(unit: str, facts: Mapping[str, UnitFacts]) -> str | None:
    known = facts.get(unit)
    # systemd reports the unit's own name as its Description when none is set.
    if known is None or not known.description or known.description == unit:
        return None
    # One line of printable text: a line break could otherwise end the YAML value early.
    text = " ".join("".join(c if c.isprintable() else " " for c in known.description).split())
    return text or None

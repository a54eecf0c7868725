"""Checks across a whole registry: overlapping claims and ports an outgoing connection may take.

Pure: the kernel's port settings come in as a parameter.
"""

from collections.abc import Iterator

from portguard.registry.claims import Claim, Proto
from portguard.registry.collisions import LIMIT, Placed, Rule, collisions
from portguard.registry.entries import LoadResult, Registry
from portguard.registry.findings import Finding, Member, Severity
from portguard.registry.keys import SINCE
from portguard.registry.localports import LocalPorts, PortSet
from portguard.registry.model import without_cycle_collector


def check_registry(
    loaded: LoadResult, local_ports: LocalPorts | None, target: tuple[int, int] | None = None
) -> tuple[Finding, ...]:
    """Every finding for a loaded registry: the loader's, then overlaps, then ephemeral ports;
    with TARGET (a release), the keys that release does not know."""
    with without_cycle_collector():
        return _check_registry(loaded, local_ports, target)


def _check_registry(
    loaded: LoadResult, local_ports: LocalPorts | None, target: tuple[int, int] | None
) -> tuple[Finding, ...]:
    placed = list(_placed_claims(loaded.registry))
    findings = [*loaded.findings, *_overlap_findings(placed, loaded.registry)]
    if target is not None:
        findings.extend(_newer_than(loaded.registry, target))
    if local_ports is not None:
        findings.extend(_ephemeral_findings(placed, local_ports))
    order = {path: index for index, path in enumerate(loaded.registry.files)}
    findings.sort(
        key=lambda f: (order.get(f.location.path, -1), f.location.line, f.location.column)
    )
    return tuple(findings)


def _placed_claims(registry: Registry) -> Iterator[Placed]:
    order = 0
    for unit in registry.units.values():
        for listen in unit.listen:
            if listen.is_template:  # its port is only known per instance
                continue
            yield Placed(listen.claim(), unit, listen, order)
            order += 1


def _newer_than(registry: Registry, target: tuple[int, int]) -> Iterator[Finding]:
    """Each listen entry with a key TARGET does not know (`pool: false` too): that release
    refuses the whole registry."""
    release = ".".join(map(str, target))
    for unit in registry.units.values():
        for listen in unit.listen:
            newer = [key for key in listen.newer_keys if SINCE[key] > target]
            if newer:
                since = max(SINCE[key] for key in newer)
                yield Finding(
                    Severity.ERROR,
                    listen.location,
                    f"{unit.name}: {' and '.join(repr(k) for k in newer)} "
                    f"{'is' if len(newer) == 1 else 'are'} new in portguard "
                    f"{'.'.join(map(str, since))}: portguard {release} refuses this whole "
                    "registry (an unknown key), and its generator then guards no unit on that "
                    "host; upgrade the fleet first, and until then leave the pool out (as a "
                    "plain range, one client socket in it would block its service)",
                    "target-version",
                )


def _via(registry: Registry) -> dict[str, frozenset[str]]:
    """For each unit, the units that may hold its ports or whose ports it may hold."""
    related: dict[str, set[str]] = {}
    for unit in registry.units.values():
        for other in unit.via:
            related.setdefault(unit.name, set()).add(other)
            related.setdefault(other, set()).add(unit.name)
    return {name: frozenset(units) for name, units in related.items()}


# How many claims of a group a finding's message names; --json lists them all.
NAMED = 3


def _overlap_findings(placed: list[Placed], registry: Registry) -> Iterator[Finding]:
    """One finding per group of colliding claims and rule (not per pair: the number of
    findings stays linear in the claims, whatever the registry)."""
    found = collisions(placed, _via(registry))
    if found.stopped_at is not None:
        at = found.stopped_at
        yield Finding(
            Severity.ERROR,
            at.listen.location,
            f"{at.unit.name} claims {at.claim}, and by here more than {LIMIT:,} pairs of "
            "different claims overlap: lint does not judge a registry this tangled (give the "
            "services distinct ports)",
            "overlap-limit",
        )
        return
    for component in found.components:
        members = tuple(Member(p.unit.name, str(p.claim), p.listen.location)
                        for p in component.members)  # fmt: skip
        first, second = component.members[:2]
        if len(component.members) == 2:
            severity, message = _pair(component.rule, first, second)
        else:
            severity, message = _group(component.rule, component.members)
        yield Finding(severity, second.listen.location, message, component.rule, members)


def _pair(rule: Rule, first: Placed, second: Placed) -> tuple[Severity, str]:
    a, b = first.unit.name, second.unit.name
    if rule is Rule.SELF:
        return Severity.WARNING, (
            f"{second.claim} overlaps {a}'s own {first.claim} at {first.listen.location}: "
            "the service's second bind would fail with EADDRINUSE"
        )
    if rule is Rule.SHARE:
        return Severity.WARNING, (
            f"{b} claims {second.claim}, which overlaps {first.claim} claimed by {a} at "
            f"{first.listen.location}: {_terms(first.claim, second.claim)} (if that is not "
            "meant, give one another port)"
        )
    return Severity.ERROR, (
        f"{b} claims {second.claim}, which overlaps {first.claim} claimed by {a} at "
        f"{first.listen.location} (give one of them another port, or list one in the other's "
        "'via')"
    )


def _group(rule: Rule, members: tuple[Placed, ...]) -> tuple[Severity, str]:
    """Three claims or more, joined by a chain of collisions (each with at least one other)."""
    named = ", ".join(f"{p.unit.name}'s {p.claim} at {p.listen.location}" for p in members[:NAMED])
    more = len(members) - NAMED
    listed = f"{named} and {more:,} more" if more > 0 else named
    units = len({p.unit.name for p in members})
    if rule is Rule.SELF:
        return Severity.WARNING, (
            f"{len(members)} of {members[0].unit.name}'s claims overlap one another: {listed}: "
            "the service's second bind would fail with EADDRINUSE"
        )
    if rule is Rule.SHARE:
        return Severity.WARNING, (
            f"{len(members)} claims of {units} units overlap, each with one at least, and both "
            f"of each such pair set the sharing option: {listed}: the kernel lets them all "
            "bind on its terms (SO_REUSEPORT: sockets of one user, the traffic split between "
            "them; UDP with SO_REUSEADDR: a unicast datagram reaches only one) (if that is not "
            "meant, give them distinct ports)"
        )
    return Severity.ERROR, (
        f"{len(members)} claims of {units} units overlap, each with one at least: {listed} "
        "(give them distinct ports, or list the one that holds a port for another in its 'via')"
    )


def _terms(a: Claim, b: Claim) -> str:
    """How the kernel lets two claims that both set the sharing option bind."""
    if a.proto is Proto.UDP and a.reuseaddr and b.reuseaddr:
        return (
            "both set SO_REUSEADDR on UDP, so the kernel lets both bind, whoever runs them; "
            "a unicast datagram reaches only one of them"
        )
    return (
        "both set SO_REUSEPORT, so the kernel lets both bind only when both services run "
        "as the same user, and then splits the traffic between them"
    )


def _ephemeral_findings(placed: list[Placed], local_ports: LocalPorts) -> Iterator[Finding]:
    registered = PortSet.of([(p.claim.first, p.claim.last) for p in placed])
    crowding = local_ports.crowding(registered)
    if crowding is not None:
        widest = max(placed, key=lambda p: p.claim.size)
        yield Finding(Severity.WARNING, widest.listen.location,
                      f"{crowding} (the widest: {widest.unit.name}'s {widest.claim})",
                      "ephemeral-share")  # fmt: skip
    low, high = local_ports.ephemeral
    for item in placed:
        exposed = local_ports.unprotected(item.claim.first, item.claim.last)
        if not exposed.ranges:
            continue
        yield Finding(
            Severity.WARNING,
            item.listen.location,
            f"{item.unit.name}: port {exposed} of {item.claim} is in the ephemeral range "
            f"{low}-{high} (net.ipv4.ip_local_port_range) but not in "
            "net.ipv4.ip_local_reserved_ports, so an outgoing connection can take it first "
            f"('portguard reserve --apply' adds {exposed} to it; enable "
            "portguard-reserve.service to do so at every boot)",
            "ephemeral",
        )

"""Checks across a whole registry: overlapping claims and ports an outgoing connection may take.

Pure: the kernel's port settings come in as a parameter.
"""

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from portguard.registry.claims import Claim, Proto, overlaps, reach, shares
from portguard.registry.entries import Listen, LoadResult, Registry, UnitEntry
from portguard.registry.findings import Finding, Severity
from portguard.registry.localports import LocalPorts
from portguard.registry.model import without_cycle_collector


@dataclass(frozen=True, slots=True)
class _Placed:
    """A concrete claim with the unit and listen entry it comes from."""

    claim: Claim
    unit: UnitEntry
    listen: Listen
    order: int  # position in the registry's reading order, so the later one is reported


def check_registry(loaded: LoadResult, local_ports: LocalPorts | None) -> tuple[Finding, ...]:
    """Every finding for a loaded registry: the loader's, then overlaps, then ephemeral ports."""
    with without_cycle_collector():
        return _check_registry(loaded, local_ports)


def _check_registry(loaded: LoadResult, local_ports: LocalPorts | None) -> tuple[Finding, ...]:
    placed = list(_placed_claims(loaded.registry))
    findings = [*loaded.findings, *_overlap_findings(placed)]
    if local_ports is not None:
        findings.extend(_ephemeral_findings(placed, local_ports))
    order = {path: index for index, path in enumerate(loaded.registry.files)}
    findings.sort(
        key=lambda f: (order.get(f.location.path, -1), f.location.line, f.location.column)
    )
    return tuple(findings)


def _placed_claims(registry: Registry) -> Iterator[_Placed]:
    order = 0
    for unit in registry.units.values():
        for listen in unit.listen:
            if listen.is_template:  # its port is only known per instance
                continue
            yield _Placed(listen.claim(), unit, listen, order)
            order += 1


def _overlapping_pairs(placed: list[_Placed]) -> Iterator[tuple[_Placed, _Placed]]:
    """Pairs whose claims collide, by a sweep over port ranges rather than every pair: the
    claims still open at a port are indexed by what they reach, so a claim meets only those
    on its own address or a wildcard of its family (5,000 units on 127.0.0.N:8080 compare
    nothing), and every candidate is confirmed by `overlaps`."""
    ordered = sorted(placed, key=lambda p: (p.claim.proto, p.claim.first))
    ending: list[tuple[int, int]] = []  # (last port, order) of the open claims: a heap
    opened: dict[int, _Placed] = {}
    by_family: dict[int, dict[int, _Placed]] = {4: {}, 6: {}}
    wildcards: dict[int, dict[int, _Placed]] = {4: {}, 6: {}}
    by_address: dict[tuple[int, object], dict[int, _Placed]] = {}
    proto = None
    for current in ordered:
        claim = current.claim
        if claim.proto != proto:  # TCP and UDP never collide: start afresh
            proto = claim.proto
            ending, opened = [], {}
            by_family, wildcards, by_address = {4: {}, 6: {}}, {4: {}, 6: {}}, {}
        while ending and ending[0][0] < claim.first:
            gone = opened.pop(heapq.heappop(ending)[1])
            for family, address in reach(gone.claim):
                by_family[family].pop(gone.order, None)
                place = wildcards[family] if address is None else by_address[(family, address)]
                place.pop(gone.order, None)
        candidates: dict[int, _Placed] = {}
        for family, address in reach(claim):
            if address is None:
                candidates.update(by_family[family])
            else:
                candidates.update(wildcards[family])
                candidates.update(by_address.get((family, address), {}))
        for earlier in candidates.values():
            if overlaps(earlier.claim, claim):
                yield (earlier, current) if earlier.order < current.order else (current, earlier)
        opened[current.order] = current
        heapq.heappush(ending, (claim.last, current.order))
        for family, address in reach(claim):
            by_family[family][current.order] = current
            if address is None:
                wildcards[family][current.order] = current
            else:
                by_address.setdefault((family, address), {})[current.order] = current


def _overlap_findings(placed: list[_Placed]) -> Iterator[Finding]:
    for first, second in _overlapping_pairs(placed):
        a, b = first.unit, second.unit
        if a.name == b.name:
            yield Finding(
                Severity.WARNING,
                second.listen.location,
                f"{second.claim} overlaps {a.name}'s own {first.claim} at {first.listen.location}:"
                " the service's second bind would fail with EADDRINUSE",
                "overlap-self",
            )
        elif b.name in a.via or a.name in b.via:
            continue
        elif shares(first.claim, second.claim):
            yield _sharing(first, second)
        else:
            yield Finding(
                Severity.ERROR,
                second.listen.location,
                f"{b.name} claims {second.claim}, which overlaps {first.claim} claimed by "
                f"{a.name} at {first.listen.location} (give one of them another port, or list "
                "one in the other's 'via')",
                "overlap",
            )


def _sharing(first: _Placed, second: _Placed) -> Finding:
    """Two units that both set the sharing option: the kernel lets both bind, on its terms."""
    a, b = first.claim, second.claim
    if a.proto is Proto.UDP and a.reuseaddr and b.reuseaddr:
        terms = (
            "both set SO_REUSEADDR on UDP, so the kernel lets both bind, whoever runs them; "
            "a unicast datagram reaches only one of them"
        )
    else:
        terms = (
            "both set SO_REUSEPORT, so the kernel lets both bind only when both services run "
            "as the same user, and then splits the traffic between them"
        )
    return Finding(
        Severity.WARNING,
        second.listen.location,
        f"{second.unit.name} claims {b}, which overlaps {a} claimed by {first.unit.name} at "
        f"{first.listen.location}: {terms} (if that is not meant, give one another port)",
        "share",
    )


def _ephemeral_findings(placed: list[_Placed], local_ports: LocalPorts) -> Iterator[Finding]:
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

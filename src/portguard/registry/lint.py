"""Checks across a whole registry: overlapping claims and ports an outgoing connection may take.

Pure: the kernel's port settings come in as a parameter.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from portguard.registry.claims import Claim, overlaps, shares
from portguard.registry.findings import Finding, Severity
from portguard.registry.localports import LocalPorts
from portguard.registry.model import Listen, LoadResult, Registry, UnitEntry


@dataclass(frozen=True, slots=True)
class _Placed:
    """A concrete claim with the unit and listen entry it comes from."""

    claim: Claim
    unit: UnitEntry
    listen: Listen
    order: int  # position in the registry's reading order, so the later one is reported


def check_registry(loaded: LoadResult, local_ports: LocalPorts | None) -> tuple[Finding, ...]:
    """Every finding for a loaded registry: the loader's, then overlaps, then ephemeral ports."""
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
    """Pairs whose claims collide, by a sweep over port ranges rather than every pair."""
    ordered = sorted(placed, key=lambda p: (p.claim.proto, p.claim.first))
    active: list[_Placed] = []
    for current in ordered:
        active = [
            a
            for a in active
            if a.claim.proto == current.claim.proto and a.claim.last >= current.claim.first
        ]
        for earlier in active:
            if overlaps(earlier.claim, current.claim) and not shares(earlier.claim, current.claim):
                yield (earlier, current) if earlier.order < current.order else (current, earlier)
        active.append(current)


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
        elif b.name not in a.via and a.name not in b.via:
            yield Finding(
                Severity.ERROR,
                second.listen.location,
                f"{b.name} claims {second.claim}, which overlaps {first.claim} claimed by "
                f"{a.name} at {first.listen.location} (give one of them another port, or list "
                "one in the other's 'via')",
                "overlap",
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

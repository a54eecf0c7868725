"""`portguard init`'s core: a registry written from the listeners present now.

The census and the attribution are `check`'s own (sockets.listeners, attribute.attribute);
this module decides, without touching the system, which unit each listener is registered
for, and writes the YAML. Whatever it writes is validated with lint's own code first.
"""

import ipaddress
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from portguard.errors import PortguardError, Unavailable
from portguard.host.occupants import Occupant
from portguard.host.sysctl import read_local_ports
from portguard.host.units import FactsUnavailable, UnitFacts
from portguard.policy.owners import CENSUS_FAILED, Holding, Owner, OwnerKind
from portguard.policy.report import describe_owner
from portguard.registry.claims import Claim, IPAddress, Proto, is_wildcard, overlaps
from portguard.registry.findings import Severity
from portguard.registry.lint import check_registry
from portguard.registry.localports import LocalPorts
from portguard.registry.model import RegistrySource, load
from portguard.registry.unitname import UnitNameKind, unit_name_kind

# Linux's default net.ipv4.ip_local_port_range, for when the running kernel's cannot be read.
DEFAULT_EPHEMERAL = (32768, 60999)
FACTS_TIMEOUT = 2.0

# Why a listener held by something other than a system unit is left out, by owner kind.
_LEFT_OUT = {
    OwnerKind.SESSION: "not a unit, left out",
    OwnerKind.SCOPE: "a scope cannot be guarded (it has no ExecStartPre=), left out",
    OwnerKind.USER_SERVICE: "a user's own unit, not the system's, left out",
    OwnerKind.CONTAINER: "published by the container engine, not a unit of its own, left out",
}
_UNKNOWN_OWNER = "its unit could not be found out, left out"

_MODE_COMMENT = (
    "# A captured registry starts in 'warn' mode: the guard runs before each start and logs",
    "# a conflict, but never blocks the start. Review the units below, then set",
    "# 'mode: enforce' so that a unit whose port is held fails its start at once.",
)


class GeneratedRegistryInvalid(PortguardError):
    """What init wrote does not pass lint: a bug in init, never the user's to fix."""


@dataclass(frozen=True, slots=True)
class Capture:
    """What a registry is written from: attributed listeners and what systemd said of units."""

    holdings: tuple[Holding, ...]
    facts: Mapping[str, UnitFacts] = field(default_factory=dict)
    gaps: tuple[str, ...] = ()
    local_ports: LocalPorts | None = None
    host: str = "localhost"
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))


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


# --- which unit a listener is registered for -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    unit: str
    via: str | None = None  # the socket unit that holds the port for the service


def placement(owner: Owner, facts: Mapping[str, UnitFacts]) -> Placement | None:
    """The registry key for a listener of OWNER, or None when no system unit owns it."""
    if owner.unit is None:
        return None
    if owner.kind is OwnerKind.SERVICE:
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


def merge_claims(sockets: Iterable[Occupant]) -> tuple[Claim, ...]:
    """The fewest claims that cover SOCKETS, one set of binds per protocol and port, sorted."""
    binds: dict[tuple[Proto, int], set[tuple[IPAddress, bool]]] = {}
    for socket in sockets:
        v6only = socket.v6only and socket.address.version == 6
        binds.setdefault((socket.proto, socket.port), set()).add((socket.address, v6only))
    claims: list[Claim] = []
    for (proto, port), found in binds.items():
        claims.extend(_port_claims(proto, port, found))
    return tuple(sorted(claims, key=claim_order))


def _port_claims(proto: Proto, port: int, binds: set[tuple[IPAddress, bool]]) -> list[Claim]:
    def claim(address: IPAddress | None = None, *, v6only: bool = False) -> Claim:
        return Claim(proto, port, port, address, v6only=v6only)

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
    """A listen entry: text, or the mapping form for a v6only wildcard."""
    if claim.v6only and claim.address == _ANY6:
        return {"port": str(claim), "v6only": True}
    return str(claim)


def _shown(claim: Claim) -> str:
    return f"{claim} (v6only)" if isinstance(claim_text(claim), dict) else str(claim)


# --- the plan ------------------------------------------------------------------------------


def plan(capture: Capture) -> Plan:
    """Every listener of CAPTURE placed under its unit, or turned into a comment line."""
    ephemeral = capture.local_ports.ephemeral if capture.local_ports else DEFAULT_EPHEMERAL
    bound = [h for h in capture.holdings if _is_listener(h.occupant)]
    listeners = [h for h in bound if not is_client(h.occupant, ephemeral)]
    by_unit: dict[str, list[Occupant]] = {}
    via: dict[str, set[str]] = {}
    unmapped: dict[str, list[Occupant]] = {}
    for holding in listeners:
        where = placement(holding.owner, capture.facts)
        if where is None:
            unmapped.setdefault(_left_out(holding.owner), []).append(holding.occupant)
            continue
        by_unit.setdefault(where.unit, []).append(holding.occupant)
        if where.via:
            via.setdefault(where.unit, set()).add(where.via)
    units, conflicts = _without_overlaps(by_unit, via, capture.facts)
    notes = [
        (claim_order(claim), f"{_shown(claim)}: {what}")
        for what, sockets in unmapped.items()
        for claim in merge_claims(sockets)
    ]
    return Plan(
        units=units,
        unmapped=tuple(line for _, line in sorted(notes)),
        conflicts=conflicts,
        clients=len(bound) - len(listeners),
    )


def _without_overlaps(
    by_unit: Mapping[str, list[Occupant]],
    via: Mapping[str, set[str]],
    facts: Mapping[str, UnitFacts],
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
        for claim in merge_claims(by_unit[name]):
            clash = next(
                (
                    (other, earlier) for other, earlier in given
                    if overlaps(earlier, claim) and other not in own_via
                    and name not in via.get(other, ())
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
    who = describe_owner(owner)
    if owner.kind not in _LEFT_OUT and owner.user:
        who += f", user {owner.user}"
    return f"{who} — {_LEFT_OUT.get(owner.kind, _UNKNOWN_OWNER)}"


def _description(unit: str, facts: Mapping[str, UnitFacts]) -> str | None:
    known = facts.get(unit)
    # systemd reports the unit's own name as its Description when none is set.
    if known is None or not known.description or known.description == unit:
        return None
    # One line of printable text: a line break could otherwise end the YAML value early.
    text = " ".join("".join(c if c.isprintable() else " " for c in known.description).split())
    return text or None


# --- the YAML ------------------------------------------------------------------------------


def render(planned: Plan, capture: Capture) -> str:
    """The registry text: a header, version, defaults, units, then what was left out."""
    when = capture.taken_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# Written by 'portguard init' on {_one_line(capture.host)} at {when} from the",
        "# listeners present then, each under the unit that holds it (a socket unit's port",
        "# under the service it starts, with 'via'). Review it before installing it as",
        "# /etc/portguard/registry.yaml: every port here is guarded for its unit.",
        "version: 1",
        *_MODE_COMMENT,
        "defaults:",
        "  mode: warn",
    ]
    if planned.units:
        entries = {unit.name: _entry(unit) for unit in planned.units}
        dumped = yaml.safe_dump(
            {"units": entries}, sort_keys=False, default_flow_style=None,
            allow_unicode=True, width=2**16,
        )  # fmt: skip
        lines.extend(dumped.rstrip("\n").split("\n"))
    else:
        lines.append("units: {}  # no listener could be mapped to a system unit")
    lines.extend(_trailer(planned, capture))
    return "\n".join(lines) + "\n"


def _entry(unit: PlannedUnit) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if unit.description:
        entry["description"] = unit.description
    entry["listen"] = [claim_text(claim) for claim in unit.claims]
    if unit.via:
        entry["via"] = list(unit.via)
    return entry


def _trailer(planned: Plan, capture: Capture) -> list[str]:
    lines: list[str] = []
    if planned.unmapped:
        lines += ["", "# Not mapped to a unit:", *(f"# {_one_line(n)}" for n in planned.unmapped)]
    if planned.conflicts:
        lines += ["", "# Left out to keep the registry valid:"]
        lines += [f"# {_one_line(n)}" for n in planned.conflicts]
    if planned.clients:
        low, high = capture.local_ports.ephemeral if capture.local_ports else DEFAULT_EPHEMERAL
        lines += [
            "",
            f"# {planned.clients} UDP socket{'s' * (planned.clients != 1)} on ports of the "
            f"ephemeral range {low}-{high} (net.ipv4.ip_local_port_range): clients, left out.",
        ]
    if capture.gaps:
        lines += ["", "# Not found out (the registry may be incomplete):"]
        lines += [f"# {_one_line(gap)}" for gap in capture.gaps]
    return lines


def _one_line(text: str) -> str:
    """TEXT fit for a YAML comment: no line breaks or other control characters."""
    return "".join(c if c.isprintable() else "?" for c in text)


def validate(text: str, local_ports: LocalPorts | None) -> None:
    """Lint TEXT with lint's own code; an error is init's bug, so it is raised, never hidden."""
    with tempfile.TemporaryDirectory(prefix="portguard-init-") as directory:
        path = Path(directory) / "registry.yaml"
        path.write_text(text, encoding="utf-8")
        findings = check_registry(load(RegistrySource(path)), local_ports)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        shown = str(errors[0]).replace(str(path), "<generated registry>")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise GeneratedRegistryInvalid(
            f"internal error: the registry written does not pass lint: {shown}{more}",
            hint="a portguard bug: please report it with the output of 'ss -tulpn'",
        )


# --- the real system -----------------------------------------------------------------------


def capture_here() -> Capture:
    """Every listener in this network namespace, attributed as `check` attributes them."""
    from portguard.host.sockets import listeners  # noqa: PLC0415
    from portguard.policy.attribute import Context, attribute  # noqa: PLC0415

    try:
        held = listeners()
    except OSError as exc:
        raise Unavailable(f"{CENSUS_FAILED}: {exc}") from None
    found = attribute(held, Context.here(self_cgroup=None, facts_timeout=FACTS_TIMEOUT))
    facts = dict(found.facts)
    gaps = list(found.gaps)
    # A socket unit's service is not in the census when it has not started: ask for it too,
    # so its entry gets its description.
    services = sorted(
        {a for h in found.holdings for a in h.owner.activates if a.endswith(".service")}
        - set(facts)
    )
    if services:
        facts.update(_more_facts(services, gaps))
    return Capture(
        holdings=found.holdings,
        facts=facts,
        gaps=tuple(gaps),
        local_ports=read_local_ports(),
        host=os.uname().nodename,
    )


def _more_facts(names: list[str], gaps: list[str]) -> dict[str, UnitFacts]:
    from portguard.host.units import unit_facts  # noqa: PLC0415

    try:
        return unit_facts(names, timeout=FACTS_TIMEOUT)
    except FactsUnavailable as exc:
        gaps.append(f"{exc}; descriptions of socket-activated services are missing")
        return {}


def run(*, capture: Callable[[], Capture] | None = None, out: IO[str] | None = None) -> int:
    """Print the registry for what listens now; exit 0 (70 when it would not pass lint)."""
    captured = (capture or capture_here)()
    text = render(plan(captured), captured)
    validate(text, captured.local_ports)
    (out or sys.stdout).write(text)
    return 0

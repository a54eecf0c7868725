"""`portguard audit`'s judgement, pure: every claim of the registry against the sockets bound
now, each one a status from one table (STATUSES), and the listeners no claim covers.

The census and attribution are `check`'s own; every outside effect enters through
`Sources` (commands/audit.py has the real ones), so the judgement is testable without a
kernel, as guard.py's is.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from portguard.errors import Exit, Unavailable
from portguard.host.occupants import Occupant
from portguard.host.units import FactsUnavailable, UnitFacts
from portguard.policy.owners import CENSUS_FAILED, Attribution, Holding, Owner
from portguard.policy.redirects import Judged, Taker
from portguard.registry.assignments import Assignment, assignments
from portguard.registry.claims import Claim, Proto, overlaps
from portguard.registry.entries import Registry
from portguard.registry.localports import LocalPorts
from portguard.registry.unitname import UnitNameKind, unit_name_kind

FACTS_TIMEOUT = 2.0
_LISTENING = ("LISTEN", "UNCONN")


class Status(StrEnum):
    SQUATTED = "squatted"
    EXHAUSTED = "exhausted"
    REDIRECTED = "redirected"
    MISSING = "missing"
    OK = "ok"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """What a status means, how the table ranks it, and whether it is drift (exit 1)."""

    meaning: str
    row_rank: int  # rows are shown most important first
    summary_rank: int  # the summary line reads in the spec's order
    drift: bool


# One row a status: `audit`'s text, JSON and metrics, and its exit code, all read this.
STATUSES: dict[Status, StatusInfo] = {
    Status.SQUATTED: StatusInfo(
        "held by someone who is neither the unit nor one of its `via`", 0, 1, drift=True
    ),
    Status.EXHAUSTED: StatusInfo(
        "a pool fewer than min-free of whose ports could be bound now", 1, 5, drift=True
    ),
    Status.REDIRECTED: StatusInfo(
        "nothing holds the port, but a NAT rule sends what other hosts send to it elsewhere",
        2,
        4,
        drift=True,
    ),
    Status.MISSING: StatusInfo(
        "the unit (or a `via` unit) is active, yet nothing holds the port", 3, 2, drift=True
    ),
    Status.OK: StatusInfo(
        "held by the unit or one of its `via`; a pool: min-free of it could be bound now",
        4,
        0,
        drift=False,
    ),
    Status.IDLE: StatusInfo("the unit is not running and the port is free", 5, 3, drift=False),
}
ROW_ORDER = tuple(sorted(STATUSES, key=lambda s: STATUSES[s].row_rank))
SUMMARY_ORDER = tuple(sorted(STATUSES, key=lambda s: STATUSES[s].summary_rank))
DRIFT = frozenset(s for s, info in STATUSES.items() if info.drift)


@dataclass(frozen=True, slots=True)
class PoolUse:
    """A pool's ports now: how many others hold, how many its unit (or a `via`) holds, and
    whether min-free of it could be bound (None: not tried)."""

    others: int
    own: int
    serves: bool | None


@dataclass(frozen=True, slots=True)
class Row:
    """One claim and how it stands. `holders` are whom the HOLDER column names: the foreign
    owners of a squatted claim (or exhausted pool), the unit's own sockets' owners of an ok
    one, none otherwise."""

    assignment: Assignment
    status: Status
    holders: tuple[Owner, ...] = ()
    taker: Taker | None = None  # the NAT rule that takes its traffic (all of it: redirected)
    pool: PoolUse | None = None


@dataclass(frozen=True, slots=True)
class Stray:
    """A listener that no claim covers, and who owns it (for --unregistered)."""

    occupant: Occupant
    owner: Owner


@dataclass(frozen=True)
class Audit:
    rows: tuple[Row, ...]
    unregistered: tuple[Stray, ...] | None  # None: not asked for
    gaps: tuple[str, ...]
    timestamp: float  # seconds since the epoch

    def count(self, status: Status) -> int:
        return sum(1 for row in self.rows if row.status is status)

    @property
    def exit_code(self) -> Exit:
        return Exit.OCCUPIED if any(r.status in DRIFT for r in self.rows) else Exit.OK


Traffic = Callable[[str, Claim, frozenset[tuple[Proto, int]]], Judged]
# `units.unit_facts`'s signature: names, then keyword timeout and patterns.
FactsQuery = Callable[..., dict[str, UnitFacts]]


@dataclass(frozen=True)
class Sources:
    """The outside world as audit sees it; `real_sources()` is the kernel's and systemd's."""

    facts: FactsQuery
    census: Callable[[set[tuple[Proto, int]]], list[Occupant]]
    listeners: Callable[[], list[Occupant]]
    attribute: Callable[[list[Occupant], FactsQuery], Attribution]
    local_ports: Callable[[], LocalPorts | None]
    clock: Callable[[], float]
    # Where NAT sends a free claim's traffic: its unit, the claim, and the (proto, port) that
    # are the unit's own (a redirect there is its plumbing).
    traffic: "Traffic" = lambda unit, claim, own: Judged()
    # Whether min-free of a pool could be bound now (trial binds, as `check`); None: not tried.
    pool_serves: Callable[[Claim], bool | None] = lambda claim: None


# --- the judgement (pure) ---------------------------------------------------------------------


def classify(
    claims: Iterable[Assignment],
    holdings: Sequence[Holding],
    facts: Mapping[str, UnitFacts] | None,
    serving: Mapping[Claim, bool | None] | None = None,
) -> tuple[Row, ...]:
    """Each claim's status, most important first, registry order within a status.

    FACTS None means systemd could not be asked: a free port is then `idle`, never `missing`.
    """
    # Each claim looks only at the sockets on its own ports: a busy host's tens of thousands
    # of connections, compared with each of 1,400 claims, once took minutes.
    by_port: dict[tuple[Proto, int], list[Holding]] = {}
    for holding in holdings:
        # TIME-WAIT has no owner left to name, and the unit's SO_REUSEADDR passes it.
        if not holding.occupant.is_time_wait:
            key = (holding.occupant.proto, holding.occupant.port)
            by_port.setdefault(key, []).append(holding)
    serving = serving or {}
    rows = [
        judge(a, _on_ports(a.claim, by_port), facts)
        if a.claim.pool is None
        else judge_pool(a, _on_ports(a.claim, by_port), serving.get(a.claim))
        for a in claims
    ]
    return tuple(sorted(rows, key=lambda row: ROW_ORDER.index(row.status)))


def _on_ports(claim: Claim, by_port: Mapping[tuple[Proto, int], list[Holding]]) -> list[Holding]:
    if claim.last - claim.first >= len(by_port):  # a wide range: fewer ports are occupied
        return [
            h
            for (proto, port), found in by_port.items()
            if proto is claim.proto and claim.first <= port <= claim.last
            for h in found
        ]
    return [h for port in claim.ports for h in by_port.get((claim.proto, port), ())]


def judge(
    assignment: Assignment, holdings: Sequence[Holding], facts: Mapping[str, UnitFacts] | None
) -> Row:
    owners = [
        h.owner
        for h in holdings
        # TIME-WAIT has no owner left to name, and the unit's SO_REUSEADDR passes it.
        if not h.occupant.is_time_wait and overlaps(h.occupant.as_claim(), assignment.claim)
    ]
    foreign = _distinct(o for o in owners if o.unit not in assignment.holders)
    if foreign:
        return Row(assignment, Status.SQUATTED, foreign)
    if owners:
        return Row(assignment, Status.OK, _distinct(owners))
    known = facts or {}
    active = any(known[u].is_active for u in assignment.holders if u in known)
    return Row(assignment, Status.MISSING if active else Status.IDLE)


def judge_pool(assignment: Assignment, holdings: Sequence[Holding], serves: bool | None) -> Row:
    """A pool is never missing (an idle pool is normal) and never squatted: it is ok while
    min-free of it could be bound, exhausted otherwise; who holds its ports is counted."""
    foreign: dict[int, Owner] = {}
    own: set[int] = set()
    for holding in holdings:
        if not overlaps(holding.occupant.as_claim(), assignment.claim):
            continue
        if holding.owner.unit in assignment.holders:
            own.add(holding.occupant.port)
        else:
            foreign.setdefault(holding.occupant.port, holding.owner)
    use = PoolUse(len(foreign), len(own), serves)
    if serves is False:
        return Row(assignment, Status.EXHAUSTED, _distinct(foreign.values()), pool=use)
    return Row(assignment, Status.OK, (), pool=use)


def strays(
    holdings: Iterable[Holding], claims: Sequence[Claim], local_ports: LocalPorts | None
) -> tuple[Stray, ...]:
    """Listeners on no claim, by protocol, port and address; UDP sockets in the ephemeral
    range are left out: they are clients (a resolver's query socket), not services."""
    found: dict[Occupant, Owner] = {}
    for holding in holdings:
        occupant = holding.occupant
        if occupant.state not in _LISTENING:
            continue
        if any(overlaps(occupant.as_claim(), claim) for claim in claims):
            continue
        if occupant.proto is Proto.UDP and local_ports is not None:
            low, high = local_ports.ephemeral
            if low <= occupant.port <= high:
                continue
        found.setdefault(occupant, holding.owner)
    ordered = sorted(found.items(), key=lambda i: (i[0].proto, i[0].port, str(i[0].address)))
    return tuple(Stray(occupant, owner) for occupant, owner in ordered)


def _distinct(owners: Iterable[Owner]) -> tuple[Owner, ...]:
    return tuple(dict.fromkeys(owners))


# --- gathering ----------------------------------------------------------------------------------


def gather(registry: Registry, sources: Sources, *, unregistered: bool) -> Audit:
    """The census and attribution of every claimed port (and every listener, if asked)."""
    names, patterns = units_to_ask(registry)
    gaps: list[str] = []
    facts: dict[str, UnitFacts] | None
    try:
        facts = sources.facts(names, timeout=FACTS_TIMEOUT, patterns=patterns)
    except FactsUnavailable as exc:
        facts = None
        gaps.append(
            f"{exc}; unit states, template instances and owners' details are unknown "
            "(a free port counts as idle, never missing)"
        )
    concrete = list(assignments(registry, facts or {}))
    ports = {(a.claim.proto, port) for a in concrete for port in a.claim.ports}
    try:
        occupants = sources.census(ports) if ports else []
        listening = sources.listeners() if unregistered else []
    except (OSError, ImportError) as exc:
        raise Unavailable(f"{CENSUS_FAILED}: {exc}") from None
    everyone = list(dict.fromkeys([*occupants, *listening]))
    attribution = sources.attribute(everyone, _reusing(sources.facts, facts, names))
    serving = {a.claim: sources.pool_serves(a.claim) for a in concrete if a.claim.pool}
    rows, traffic_gaps = _with_traffic(
        classify(concrete, attribution.holdings, facts, serving), concrete, sources.traffic
    )
    gaps += traffic_gaps
    found = None
    if unregistered:
        listeners = set(listening)
        held = [h for h in attribution.holdings if h.occupant in listeners]
        found = strays(held, [a.claim for a in concrete], sources.local_ports())
    all_gaps = tuple(dict.fromkeys([*gaps, *attribution.gaps]))
    return Audit(rows, found, all_gaps, sources.clock())


def _with_traffic(
    rows: tuple[Row, ...],
    concrete: Sequence[Assignment],
    traffic: Traffic,
) -> tuple[tuple[Row, ...], list[str]]:
    """A free claim (missing or idle) whose traffic NAT takes is `redirected`; one that NAT
    takes some of keeps its status and names the rule; what could not be judged is a gap."""
    ports: dict[str, set[tuple[Proto, int]]] = {}
    for a in concrete:
        ports.setdefault(a.unit, set()).update((a.claim.proto, p) for p in a.claim.ports)
    out, gaps = [], []
    for row in rows:
        if row.status not in (Status.MISSING, Status.IDLE):
            out.append(row)
            continue
        own = frozenset(p for unit in row.assignment.holders for p in ports.get(unit, ()))
        judged = traffic(row.assignment.unit, row.assignment.claim, own)
        gaps += [g for g in judged.gaps if g not in gaps]
        if judged.taken:
            out.append(Row(row.assignment, Status.REDIRECTED, (), judged.taken[0].taker))
        elif judged.partly:
            out.append(Row(row.assignment, row.status, (), judged.partly[0].taker))
        else:
            out.append(row)
    ordered = tuple(sorted(out, key=lambda row: ROW_ORDER.index(row.status)))
    return ordered, [f"whether NAT takes a port: {g}" for g in gaps]


def units_to_ask(registry: Registry) -> tuple[list[str], list[str]]:
    """Every registered unit and `via` unit by name; each template's instances by pattern."""
    names: list[str] = []
    patterns: list[str] = []
    for name, entry in registry.units.items():
        if unit_name_kind(name) is UnitNameKind.TEMPLATE:
            patterns.append(name.replace("@.", "@*.", 1))
        else:
            names.append(name)
        names.extend(v for v in entry.via if unit_name_kind(v) is not UnitNameKind.TEMPLATE)
    return list(dict.fromkeys(names)), patterns


def _reusing(
    query: FactsQuery, known: Mapping[str, UnitFacts] | None, asked: Sequence[str]
) -> FactsQuery:
    """Attribution's facts query, answered from what systemd already said where it can.

    If systemd did not answer the first time, it is not asked again: that would double the
    wait, and the gap has been reported once already.
    """
    already = set(asked) | set(known or {})

    def facts(
        names: Sequence[str], *, timeout: float, patterns: Sequence[str] = ()
    ) -> dict[str, UnitFacts]:
        if known is None:
            return {}
        found = {name: known[name] for name in names if name in known}
        rest = [name for name in names if name not in already]
        if rest or patterns:
            found.update(query(rest, timeout=timeout, patterns=patterns))
        return found

    return facts

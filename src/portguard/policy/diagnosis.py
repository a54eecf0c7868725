"""`portguard why`'s judgement, pure: who is on a port, what the registry says, the clean fix.

The facts come in gathered (why.py does the census, attribution and /proc reads); this
module orders them most important first and picks the fix. It never suggests a signal.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.processes import Process
from portguard.host.sessions import Session
from portguard.host.units import UnitFacts
from portguard.policy import runtimes
from portguard.policy.kinds import kind_of
from portguard.policy.owners import Fix, Holding, Owner, OwnerKind
from portguard.policy.report import describe_owner, remedy_for
from portguard.registry.assignments import Assignment
from portguard.registry.claims import Claim, IPAddress, Proto

_LISTENING = ("LISTEN", "UNCONN")


@dataclass(frozen=True, slots=True)
class Query:
    """What the operator asked about: `8080`, `8080/tcp`, `53/udp --address 127.0.0.1` (read
    by cli/values.py)."""

    port: int
    protos: tuple[Proto, ...]
    address: IPAddress | None = None

    def claims(self) -> list[Claim]:
        return [Claim(proto, self.port, self.port, self.address) for proto in self.protos]

    def __str__(self) -> str:
        port = str(self.port)
        if self.address is not None:
            host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
            port = f"{host}:{port}"
        return f"{port}/{self.protos[0]}" if len(self.protos) == 1 else port


@dataclass(frozen=True, slots=True)
class Occupancy:
    """One owner and the sockets it has on the port, with what is known of it."""

    owner: Owner
    sockets: tuple[Occupant, ...]
    unit: UnitFacts | None = None
    process: Process | None = None
    parent: Process | None = None
    session: Session | None = None
    forwards_to: str | None = None  # docker-proxy's container address
    registered: bool = False  # the registry gives the port to this owner

    @property
    def listening(self) -> bool:
        return any(s.state in _LISTENING for s in self.sockets)


@dataclass(frozen=True, slots=True)
class TimeWait:
    count: int
    last_ms: int  # until the kernel drops the last one

    @property
    def seconds_left(self) -> int:
        return -(-self.last_ms // 1000)


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """The port bound in another network namespace, while free in the one asked about."""

    namespace: str  # `netns x` (ip netns), or `the namespace of pid N`
    owner: Owner
    sockets: tuple[Occupant, ...]


# Namespaces shown one by one before the rest are counted.
_ELSEWHERE_SHOWN = 8


def elsewhere_lines(found: Sequence[Elsewhere]) -> list[str]:
    """One line per namespace the port is bound in; containers' namespaces (often many, and
    each its own) grouped into one line; past a few, a count."""
    containers = [e for e in found if e.owner.kind is OwnerKind.CONTAINER]
    lines = [f"{e.namespace}: {describe_owner(e.owner)}" for e in found if e not in containers]
    if len(containers) == 1:
        lines.append(f"{containers[0].namespace}: {describe_owner(containers[0].owner)}")
    elif containers:
        names = list(dict.fromkeys(_container_label(e.owner) for e in containers))
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(f"inside {len(containers)} container namespaces ({shown})")
    if len(lines) > _ELSEWHERE_SHOWN:
        rest = len(lines) - _ELSEWHERE_SHOWN + 1
        lines = [*lines[: _ELSEWHERE_SHOWN - 1], f"and {rest} more namespaces"]
    return lines


def _container_label(owner: Owner) -> str:
    return owner.container_name or (owner.container or "")[:12] or owner.unit or "unnamed"


@dataclass(frozen=True)
class Diagnosis:
    query: Query
    occupancies: tuple[Occupancy, ...]  # most important first
    time_wait: TimeWait | None
    assignments: tuple[Assignment, ...]
    fixes: tuple[str, ...]
    gaps: tuple[str, ...] = ()
    netns: str | None = None
    registry_note: str | None = None  # why the registry could not be asked
    registry_exists: bool = True
    elsewhere: tuple[Elsewhere, ...] = ()  # searched only when free here

    @property
    def occupied(self) -> bool:
        return bool(self.occupancies or self.time_wait)

    @property
    def exit_code(self) -> Exit:
        return Exit.OCCUPIED if self.occupied else Exit.OK


def group(holdings: Sequence[Holding]) -> tuple[dict[Owner, list[Occupant]], TimeWait | None]:
    """Sockets per owner, in census order; TIME-WAIT, which has no owner, counted apart."""
    owners: dict[Owner, list[Occupant]] = {}
    waits = [h.occupant for h in holdings if h.owner.kind is OwnerKind.TIME_WAIT]
    for holding in holdings:
        if holding.owner.kind is not OwnerKind.TIME_WAIT:
            owners.setdefault(holding.owner, []).append(holding.occupant)
    time_wait = TimeWait(len(waits), max(o.expires_ms or 0 for o in waits)) if waits else None
    return owners, time_wait


def is_registered(owner: Owner, assignments: Sequence[Assignment]) -> bool:
    return owner.unit is not None and any(owner.unit in a.holders for a in assignments)


def diagnose(
    query: Query,
    occupancies: Iterable[Occupancy],
    time_wait: TimeWait | None,
    assignments: Sequence[Assignment],
    *,
    gaps: Sequence[str] = (),
    netns: str | None = None,
    registry_note: str | None = None,
    registry_exists: bool = True,
    elsewhere: Sequence[Elsewhere] = (),
    serving: Mapping[Claim, bool] | None = None,
) -> Diagnosis:
    """Order the occupants (foreign listeners first: they are what breaks a start) and fix.
    SERVING: whether each pool of the assignments can serve now (min-free of it binds)."""
    ordered = sorted(occupancies, key=lambda o: (o.registered, not o.listening))
    fixes = _fixes(query, ordered, time_wait, assignments, serving or {})
    return Diagnosis(query, tuple(ordered), time_wait, tuple(assignments), tuple(fixes),
                     tuple(dict.fromkeys(gaps)), netns, registry_note, registry_exists,
                     tuple(elsewhere))  # fmt: skip


def _fixes(
    query: Query,
    occupancies: Sequence[Occupancy],
    time_wait: TimeWait | None,
    assignments: Sequence[Assignment],
    serving: Mapping[Claim, bool],
) -> list[str]:
    registered = list(dict.fromkeys(a.unit for a in assignments))
    pools = [a for a in assignments if a.claim.pool is not None]
    fixes: list[str] = []
    for occupancy in occupancies:
        if occupancy.registered:
            continue
        proto = occupancy.sockets[0].proto
        fix = _fix(occupancy.owner, registered, port=query.port, proto=proto)
        if pools and len(pools) == len(assignments):
            fix = _pool_fix(pools, serving, fix)
        fixes.append(fix)
    if time_wait is not None and not fixes:
        fixes.append(
            f"wait {time_wait.seconds_left} s, until the last TIME-WAIT ends; or "
            + remedy_for(Owner(OwnerKind.TIME_WAIT), unit="", port=query.port, proto="tcp")
        )
    if not fixes and occupancies:
        holders = ", ".join(dict.fromkeys(o.owner.unit or "" for o in occupancies))
        fixes.append(f"nothing to fix: {holders} holds it, as the registry says")
    return list(dict.fromkeys(fixes))


def _pool_fix(pools: Sequence[Assignment], serving: Mapping[Claim, bool], fix: str) -> str:
    """A holder in a pool (DESIGN rule 6): one taken port is one its service skips, so it
    blocks a start only when the pool cannot serve (fewer than min-free bindable)."""
    whose = " and ".join(dict.fromkeys(f"{a.unit}'s pool {a.claim}" for a in pools))
    short = [a for a in pools if serving.get(a.claim) is False]
    if short:
        need = short[0].claim.pool
        return (
            f"{whose} cannot serve: fewer than min-free {need} of it can be bound, so its "
            f"unit's start fails ('exhausted'); free ports of it, this one first: {fix}"
        )
    if all(serving.get(a.claim) for a in pools):
        return (
            f"nothing blocks a start: {whose} is bound on demand and can serve (min-free "
            f"of it can be bound), its service skips this port; to free it anyway: {fix}"
        )
    return (
        f"{whose} is bound on demand: this port blocks a start only when fewer than "
        f"min-free of the pool can be bound ('portguard audit' says); to free it: {fix}"
    )


def _fix(owner: Owner, registered: Sequence[str], *, port: int, proto: Proto) -> str:
    """The fix through the owner's supervisor, as `check` would log it for the registered unit."""
    plumbing = runtimes.plumbing_remedy(owner.unit, owner.comm, port)
    if registered or plumbing:
        return remedy_for(owner, unit=" or ".join(registered), port=port, proto=proto)
    unclaimed = kind_of(owner).unclaimed
    if unclaimed is not None:
        return unclaimed(owner, Fix("the registered unit", port, str(proto)))
    return remedy_for(owner, unit="the registered unit", port=port, proto=proto)

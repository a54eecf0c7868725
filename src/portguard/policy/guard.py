"""The check policy: probe; on a busy port find who holds it; wait for the unit's own remnants
or fail at once. Every outside effect comes in through `Effects`, so the policy is testable
without a kernel.
"""

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum, auto

from portguard.host.occupants import Occupant
from portguard.host.probe import Attempt, Bind, Outcome
from portguard.policy.kinds import find_holder
from portguard.policy.owners import CENSUS_FAILED, Attribution, Holding, OwnerKind
from portguard.policy.report import (
    Report,
    Verdict,
    client_remedy,
    describe_owner,
    remedy_for,
    took_from_ephemeral_range,
)
from portguard.registry.claims import Claim, Proto, overlaps, reach
from portguard.registry.timespan import format_ms

# The kernel's default net.ipv4.ip_unprivileged_port_start.
_FIRST_UNPRIVILEGED = 1024
# When the holder's PIDs cannot be seen, re-probe this often rather than not at all.
_BLIND_RETRY_MS = 200


@dataclass(frozen=True, slots=True)
class Guarded:
    """What `check` guards: one unit's concrete claims and its wait budget."""

    unit: str
    claims: tuple[Claim, ...]
    wait_ms: int
    via: tuple[str, ...] = ()
    team: str | None = None
    uid: int | None = None  # who binds: SO_REUSEPORT shares only between sockets of one uid


@dataclass(frozen=True)
class Effects:
    probe: Callable[[Sequence[Claim]], list[Attempt]]
    census: Callable[[Iterable[tuple[Proto, int]]], list[Occupant]]
    attribute: Callable[[list[Occupant], Sequence[str], float], Attribution]
    wait: Callable[[Sequence[int], float], None]  # until a PID exits or the seconds pass
    clock: Callable[[], float]  # monotonic seconds


@dataclass(frozen=True, slots=True)
class Wait:
    pids: tuple[int, ...]
    until_ms: int  # since the check began
    blocker: Holding


class _Role(Enum):
    FOREIGN = auto()  # someone else: fail at once
    DELEGATED = auto()  # a socket unit in `via` holds it for the service
    DRAINING = auto()  # the unit's own leftover, or a `via` service handing over
    TIME_WAIT = auto()


def check(guarded: Guarded, effects: Effects) -> Report:
    """Decide, waiting while the unit's own remnants drain; never signals anything."""
    start = effects.clock()

    def elapsed_ms() -> int:
        return int((effects.clock() - start) * 1000)

    deadline_ms = guarded.wait_ms
    waited_for: Holding | None = None
    unexplained_retry = True
    while True:
        attempts = effects.probe(guarded.claims)
        early = _settled_without_census(guarded, attempts, waited_for, elapsed_ms())
        if early is not None:
            return early
        busy = [a for a in attempts if a.outcome is Outcome.IN_USE]
        budget_s = (deadline_ms - elapsed_ms()) / 1000
        attribution = _look(guarded, busy, effects, budget_s)
        own = attribution.facts.get(guarded.unit)
        if own is not None and own.timeout_start_ms:
            deadline_ms = min(deadline_ms, _below_start_timeout(own.timeout_start_ms))
        decision = decide(
            guarded, busy, attribution,
            elapsed_ms=elapsed_ms(), deadline_ms=deadline_ms, waited_for=waited_for,
        )  # fmt: skip
        if isinstance(decision, Report):
            unexplained = decision.verdict is Verdict.HELD and decision.owner is None
            if unexplained and unexplained_retry and not attribution.census_failed:
                # Nothing holds it in the census: the holder left between probe and census.
                unexplained_retry = False
                continue
            return decision
        waited_for = decision.blocker
        effects.wait(decision.pids, max(0, decision.until_ms - elapsed_ms()) / 1000)


def _look(guarded: Guarded, busy: list[Attempt], effects: Effects, budget_s: float) -> Attribution:
    """Who holds the busy binds, or, when the socket table cannot be read, only why not."""
    facts_timeout = max(0.2, min(1.0, budget_s))  # a silent bus costs at most this
    try:
        occupants = effects.census({(a.bind.claim.proto, a.bind.port) for a in busy})
    except (OSError, ImportError) as exc:
        # The probe's verdict stands; the report says what could not be found out.
        attribution = effects.attribute([], (guarded.unit,), facts_timeout)
        gap = f"{CENSUS_FAILED}: {exc}"
        return replace(attribution, gaps=(gap, *attribution.gaps), census_failed=True)
    return effects.attribute(occupants, (guarded.unit,), facts_timeout)


def _below_start_timeout(timeout_start_ms: int) -> int:
    """A deadline that leaves systemd's TimeoutStartSec= room to start the service itself."""
    return max(0, timeout_start_ms - max(1000, timeout_start_ms // 10))


def _settled_without_census(
    guarded: Guarded, attempts: list[Attempt], waited_for: Holding | None, elapsed_ms: int
) -> Report | None:
    """Verdicts the probe alone gives: free, released, unassignable, denied."""
    for attempt in attempts:
        if attempt.outcome is Outcome.UNASSIGNABLE:
            return _unassignable(guarded, attempt.bind)
    for attempt in attempts:
        if attempt.outcome is Outcome.DENIED:
            return _denied(guarded, attempt.bind)
    if any(a.outcome is Outcome.IN_USE for a in attempts):
        return None
    if waited_for is None:
        return _report(Verdict.FREE, guarded, f"{_claims_text(guarded)} free")
    return _released(guarded, waited_for, elapsed_ms)


def decide(
    guarded: Guarded,
    busy: list[Attempt],
    attribution: Attribution,
    *,
    elapsed_ms: int,
    deadline_ms: int,
    waited_for: Holding | None = None,
) -> Report | Wait:
    """For busy binds: fail at once on a foreign holder, else wait for the unit's own remnants."""
    pids: set[int] = set()
    draining: list[tuple[Bind, Holding]] = []
    time_wait_ms = 0
    for attempt in busy:
        blockers = _blockers(attempt.bind, attribution.holdings, guarded.uid)
        if not blockers:
            return _held_unknown(guarded, attempt.bind, attribution)
        for holding in blockers:
            role = _role(holding, guarded)
            if role is _Role.FOREIGN:
                return _held(guarded, attempt.bind, holding, attribution)
            if role is not _Role.DELEGATED:
                draining.append((attempt.bind, holding))
                pids.update(holding.owner.holder_pids)
                time_wait_ms = max(time_wait_ms, holding.occupant.expires_ms or 0)
    if not draining:
        # Every busy bind is held for the unit by a socket unit in its `via`.
        if waited_for is not None:
            return _released(guarded, waited_for, elapsed_ms)
        return _report(Verdict.FREE, guarded, f"{_claims_text(guarded)} held for it by 'via'")
    remaining = deadline_ms - elapsed_ms
    bind, blocker = draining[0]
    if not pids and time_wait_ms > remaining:
        return _drain_timeout(guarded, bind, blocker, attribution,
                              elapsed_ms=elapsed_ms, time_wait_left_ms=time_wait_ms)  # fmt: skip
    if remaining <= 0:
        return _drain_timeout(guarded, bind, blocker, attribution,
                              elapsed_ms=elapsed_ms, time_wait_left_ms=None)  # fmt: skip
    # Wake when a holder exits, or when the last TIME-WAIT timer runs out.
    step = time_wait_ms if time_wait_ms else (remaining if pids else _BLIND_RETRY_MS)
    return Wait(tuple(sorted(pids)), elapsed_ms + min(remaining, step), blocker)


def _blockers(bind: Bind, holdings: Iterable[Holding], uid: int | None) -> list[Holding]:
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


def _role(holding: Holding, guarded: Guarded) -> _Role:
    owner = holding.owner
    if owner.kind is OwnerKind.TIME_WAIT:
        return _Role.TIME_WAIT
    if owner.kind is OwnerKind.SELF or owner.unit == guarded.unit:
        return _Role.DRAINING
    if owner.unit in guarded.via:
        return _Role.DELEGATED if owner.kind is OwnerKind.SOCKET else _Role.DRAINING
    return _Role.FOREIGN


# --- reports ----------------------------------------------------------------------------------


def _claims_text(guarded: Guarded) -> str:
    return ", ".join(str(c) for c in guarded.claims) or "no claims"


def _registered(guarded: Guarded) -> str:
    return f"registered to {guarded.unit}" + (f" ({guarded.team})" if guarded.team else "")


def _report(
    verdict: Verdict,
    guarded: Guarded,
    summary: str,
    remedy: str | None = None,
    *,
    bind: Bind | None = None,
    holding: Holding | None = None,
    gaps: tuple[str, ...] = (),
    waited_ms: int | None = None,
) -> Report:
    occupant = holding.occupant if holding else None
    address = bind.host if bind else (str(occupant.address) if occupant else None)
    port = bind.port if bind else (occupant.port if occupant else None)
    proto = bind.claim.proto if bind else (occupant.proto if occupant else None)
    return Report(
        verdict,
        guarded.unit,
        summary,
        remedy,
        address=address,
        port=port,
        proto=str(proto) if proto else None,
        state=occupant.state if occupant else None,
        owner=holding.owner if holding else None,
        registered_unit=guarded.unit,
        team=guarded.team,
        waited_ms=waited_ms,
        gaps=gaps,
    )


def _remedy(guarded: Guarded, bind: Bind, holding: Holding, attribution: Attribution) -> str:
    if took_from_ephemeral_range(holding.occupant, attribution.local_ports):
        return client_remedy(holding.owner, holding.occupant)
    return remedy_for(holding.owner, unit=guarded.unit, port=bind.port, proto=bind.claim.proto)


def _held(guarded: Guarded, bind: Bind, holding: Holding, attribution: Attribution) -> Report:
    summary = f"{bind} is held by {describe_owner(holding.owner)} — {_registered(guarded)}"
    return _report(Verdict.HELD, guarded, summary, _remedy(guarded, bind, holding, attribution),
                   bind=bind, holding=holding, gaps=attribution.gaps)  # fmt: skip


def _held_unknown(guarded: Guarded, bind: Bind, attribution: Attribution) -> Report:
    gaps = attribution.gaps
    if not attribution.census_failed:
        # Only a census that ran can say it found nothing.
        gaps = (*gaps, "no socket on this port was found in this network namespace")
    return _report(
        Verdict.HELD,
        guarded,
        f"{bind} is in use by an unknown holder — {_registered(guarded)}",
        find_holder(bind.port, bind.claim.proto),
        bind=bind,
        gaps=gaps,
    )


def _drain_timeout(
    guarded: Guarded,
    bind: Bind,
    holding: Holding,
    attribution: Attribution,
    *,
    elapsed_ms: int,
    time_wait_left_ms: int | None,
) -> Report:
    if time_wait_left_ms is not None:
        summary = (
            f"{bind} is blocked by connections in TIME-WAIT for {format_ms(time_wait_left_ms)} "
            f"more, longer than {guarded.unit}'s wait of {format_ms(guarded.wait_ms)}"
        )
    else:
        owner = describe_owner(holding.owner)
        summary = f"{bind} is still held by {owner} after {format_ms(elapsed_ms)}"
    remedy = _remedy(guarded, bind, holding, attribution)
    return _report(Verdict.DRAIN_TIMEOUT, guarded, summary, remedy, bind=bind, holding=holding,
                   gaps=attribution.gaps, waited_ms=elapsed_ms)  # fmt: skip


def _released(guarded: Guarded, holding: Holding, elapsed_ms: int) -> Report:
    summary = (
        f"{holding.occupant} was held by {describe_owner(holding.owner)}; free after "
        f"{format_ms(elapsed_ms)}"
    )
    return _report(Verdict.RELEASED, guarded, summary, holding=holding, waited_ms=elapsed_ms)


def _unassignable(guarded: Guarded, bind: Bind) -> Report:
    return _report(
        Verdict.UNASSIGNABLE,
        guarded,
        f"{bind} cannot be bound: {bind.host} is not an address of this host",
        f"bring {bind.host} up before {guarded.unit} starts (the interface or VIP, and "
        "After=network-online.target), or change the claim",
        bind=bind,
    )


def _denied(guarded: Guarded, bind: Bind) -> Report:
    if bind.port < _FIRST_UNPRIVILEGED:
        remedy = (
            f"port {bind.port} is privileged: give {guarded.unit} "
            "AmbientCapabilities=CAP_NET_BIND_SERVICE, or use a port above 1023"
        )
    else:
        remedy = f"a policy forbids it: check {guarded.unit}'s SocketBindDeny=/SocketBindAllow="
    summary = f"{bind} cannot be bound: permission denied"
    return _report(Verdict.DENIED, guarded, summary, remedy, bind=bind)

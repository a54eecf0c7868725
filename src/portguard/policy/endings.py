"""The Report for each way a check ends: free, released, held, drain-timeout, unassignable,
denied, and a pool exhausted."""

from dataclasses import replace

from portguard.host.probe import Bind, PoolFamily
from portguard.policy.blockers import Guarded
from portguard.policy.kinds import find_holder
from portguard.policy.owners import Attribution, Holding, OwnerKind
from portguard.policy.report import (
    Report,
    Verdict,
    bound_connection_remedy,
    client_remedy,
    describe_owner,
    remedy_for,
    took_from_ephemeral_range,
)
from portguard.registry.timespan import format_ms

# The kernel's default net.ipv4.ip_unprivileged_port_start.
_FIRST_UNPRIVILEGED = 1024


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
    pool: tuple[str, int, int] | None = None,
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
        pool=pool,
    )


def _remedy(guarded: Guarded, bind: Bind, holding: Holding, attribution: Attribution) -> str:
    occupant, owner = holding.occupant, holding.owner
    if took_from_ephemeral_range(occupant, attribution.local_ports):
        return client_remedy(owner, occupant)
    connection = occupant.peer is not None and occupant.state not in ("LISTEN", "UNCONN")
    if connection and owner.kind is OwnerKind.UNKNOWN and attribution.local_ports is not None:
        # Outside any unit, and not the kernel's choice: its program bound the port itself.
        return bound_connection_remedy(owner, occupant, guarded.unit)
    return remedy_for(owner, unit=guarded.unit, port=bind.port, proto=bind.claim.proto)


def held(guarded: Guarded, bind: Bind, holding: Holding, attribution: Attribution) -> Report:
    summary = f"{bind} is held by {describe_owner(holding.owner)} — {_registered(guarded)}"
    return _report(Verdict.HELD, guarded, summary, _remedy(guarded, bind, holding, attribution),
                   bind=bind, holding=holding, gaps=attribution.gaps)  # fmt: skip


def exhausted(held_report: Report, families: list[PoolFamily]) -> Report:
    """A pool fewer than min-free of whose ports bind in every family, from the `held` verdict
    on its first port in use: that holder named, the others counted from the probe."""
    claim = families[0].claim
    need = claim.pool or 1
    in_use = max(f.in_use for f in families)
    summary = (
        f"pool {claim} cannot serve: {in_use:,} of its {claim.size:,} ports are in use and it "
        f"needs {need:,} free; {held_report.summary}"
    )
    remedy = (
        f"{held_report.remedy}; for the other ports in use, 'portguard audit' counts the pool's "
        "holders; or widen the pool (its 'port' in the registry and the service's own setting)"
    )
    return replace(held_report, verdict=Verdict.EXHAUSTED, summary=summary, remedy=remedy,
                   pool=(str(claim), in_use, need))  # fmt: skip


def held_unknown(guarded: Guarded, bind: Bind, attribution: Attribution) -> Report:
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


def drain_timeout(
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


def released(guarded: Guarded, holding: Holding, elapsed_ms: int) -> Report:
    summary = (
        f"{holding.occupant} was held by {describe_owner(holding.owner)}; free after "
        f"{format_ms(elapsed_ms)}"
    )
    return _report(Verdict.RELEASED, guarded, summary, holding=holding, waited_ms=elapsed_ms)


def unassignable(guarded: Guarded, bind: Bind) -> Report:
    return _report(
        Verdict.UNASSIGNABLE,
        guarded,
        f"{bind} cannot be bound: {bind.host} is not an address of this host",
        f"bring {bind.host} up before {guarded.unit} starts (the interface or VIP, and "
        "After=network-online.target), or change the claim",
        bind=bind,
    )


def denied(guarded: Guarded, bind: Bind) -> Report:
    if bind.port < _FIRST_UNPRIVILEGED:
        remedy = (
            f"port {bind.port} is privileged: give {guarded.unit} "
            "AmbientCapabilities=CAP_NET_BIND_SERVICE, or use a port above 1023"
        )
    else:
        remedy = f"a policy forbids it: check {guarded.unit}'s SocketBindDeny=/SocketBindAllow="
    summary = f"{bind} cannot be bound: permission denied"
    return _report(Verdict.DENIED, guarded, summary, remedy, bind=bind)


def free(guarded: Guarded, how: str = "free") -> Report:
    return _report(Verdict.FREE, guarded, f"{_claims_text(guarded)} {how}")

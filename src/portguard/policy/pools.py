"""A pool's verdict (DESIGN rule 6): a range the service binds on demand, one port per call or
session, is never required wholly free. It can serve while min-free of its ports bind in one
family at least; then nobody in it is the start's business (`audit` and `why` count them).
Only a pool that cannot serve is judged, from its first port in use alone: someone else's,
and the pool is exhausted; the unit's own remnant, and the start waits for it to drain.
"""

from portguard.host.probe import Attempt, Outcome, PoolFamily
from portguard.policy.blockers import Guarded, Role, Wait, blockers, role
from portguard.policy.endings import denied, drain_timeout, exhausted, unassignable
from portguard.policy.owners import Attribution, OwnerKind
from portguard.policy.report import Report


def serves(families: list[PoolFamily]) -> bool:
    return any(family.serves for family in families)


def first_in_use(families: list[PoolFamily]) -> Attempt | None:
    return next((f.first_in_use for f in families if f.first_in_use is not None), None)


def refused(guarded: Guarded, families: list[PoolFamily]) -> Report | None:
    """The verdict of a pool no port of which is in use, yet none binds: its address is not on
    this host, or the binds are denied (a privileged range, SocketBindDeny=)."""
    if first_in_use(families) is not None:
        return None
    attempt = next(f.refused for f in families if f.refused is not None)
    if attempt.outcome is Outcome.UNASSIGNABLE:
        return unassignable(guarded, attempt.bind)
    return denied(guarded, attempt.bind)


def decide(
    guarded: Guarded,
    families: list[PoolFamily],
    attribution: Attribution,
    *,
    elapsed_ms: int,
    deadline_ms: int,
) -> Report | Wait | None:
    """For a pool that cannot serve, from who holds its first port in use: exhausted when
    someone else does; wait when the unit's own remnant does (its ports free as it drains);
    None when a socket unit of its `via` holds it for the service."""
    attempt = first_in_use(families)
    assert attempt is not None  # refused() answered for pools with none
    found = blockers(attempt.bind, attribution.holdings, guarded.uid)
    if not found:
        return exhausted(guarded, families, attempt.bind, None, attribution)
    holding = found[0]
    its_role = role(holding, guarded)
    if its_role is Role.FOREIGN:
        return exhausted(guarded, families, attempt.bind, holding, attribution)
    if its_role is Role.DELEGATED:
        return None
    remaining = deadline_ms - elapsed_ms
    time_wait_ms = holding.occupant.expires_ms or 0
    pids = holding.owner.holder_pids
    if remaining <= 0 or (not pids and time_wait_ms > remaining):
        left = time_wait_ms if holding.owner.kind is OwnerKind.TIME_WAIT else None
        return drain_timeout(guarded, attempt.bind, holding, attribution,
                             elapsed_ms=elapsed_ms, time_wait_left_ms=left)  # fmt: skip
    step = time_wait_ms or remaining
    return Wait(tuple(sorted(pids)), elapsed_ms + min(remaining, step), holding)

"""A pool's probe read (DESIGN rule 6): a range the service binds on demand, one port per call
or session, is never required wholly free. It can serve while min-free of its ports bind in
one family at least; then nobody in it is the start's business (`audit` and `why` count
them). A pool that cannot serve is judged (policy/guard.py) from its first port in use
alone, as any claim's port: someone else's, and the pool is exhausted; the unit's own
remnant, and the start waits for it to drain.
"""

from portguard.host.probe import Attempt, Outcome, PoolFamily
from portguard.policy.blockers import Guarded
from portguard.policy.endings import denied, unassignable
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

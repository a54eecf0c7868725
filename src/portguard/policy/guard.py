"""The check policy: probe; on a busy port find who holds it; wait for the unit's own remnants
or fail at once. Every outside effect comes in through `Effects`, so the policy is testable
without a kernel.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from portguard.host.occupants import Occupant
from portguard.host.probe import Attempt, Bind, Outcome, PoolFamily
from portguard.policy import pools
from portguard.policy.blockers import Guarded, Role, Wait, blockers, role
from portguard.policy.endings import (
    denied,
    drain_timeout,
    exhausted,
    free,
    held,
    held_unknown,
    released,
    unassignable,
)
from portguard.policy.owners import CENSUS_FAILED, Attribution, Holding
from portguard.policy.report import Report, Verdict
from portguard.registry.claims import Claim, Proto

__all__ = ["Effects", "Guarded", "Wait", "check", "decide"]

# When the holder's PIDs cannot be seen, re-probe this often rather than not at all.
_BLIND_RETRY_MS = 200


@dataclass(frozen=True)
class Effects:
    """Every outside effect the check policy has: the host, or a test's fakes."""

    probe: Callable[[Sequence[Claim]], list[Attempt]]
    census: Callable[[Iterable[tuple[Proto, int]]], list[Occupant]]
    attribute: Callable[[list[Occupant], Sequence[str], float], Attribution]
    wait: Callable[[Sequence[int], float], None]  # until a PID exits or the seconds pass
    clock: Callable[[], float]  # monotonic seconds
    probe_pool: Callable[[Claim], list[PoolFamily]] | None = None  # needed for pools only
    # The listeners on the ports alone (and any UDP socket): a census that need not walk the
    # connections, looked at first; None: the census alone.
    listening: Callable[[Iterable[tuple[Proto, int]]], list[Occupant]] | None = None


def check(guarded: Guarded, effects: Effects) -> Report:
    """Decide, waiting while the unit's own remnants drain; never signals anything. The ports
    the service binds at start first, then its pools."""
    start = effects.clock()

    def elapsed_ms() -> int:
        return int((effects.clock() - start) * 1000)

    plain = replace(guarded, claims=tuple(c for c in guarded.claims if c.pool is None))
    report = _check_binds(plain, effects, elapsed_ms)
    if len(plain.claims) == len(guarded.claims) or report.verdict not in _STARTS:
        return report
    found = _check_pools(guarded, effects, elapsed_ms)
    if found is not None:
        return found
    return free(guarded) if report.verdict is Verdict.FREE else report


_STARTS = (Verdict.FREE, Verdict.RELEASED)


def _check_binds(guarded: Guarded, effects: Effects, elapsed_ms: Callable[[], int]) -> Report:
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
        first = _first_foreign(guarded, busy, effects, budget_s, elapsed_ms())
        if first is not None:
            return first
        if effects.listening is not None:
            # A listener someone else owns is the usual holder, and it alone makes the bind
            # fail: then the table of connections is never read. Anything else (the unit's
            # own listener, no listener at all) is judged on every socket on the ports.
            attribution = _look(guarded, busy, effects, budget_s, effects.listening)
            decision = decide(guarded, busy, attribution, elapsed_ms=elapsed_ms(),
                              deadline_ms=deadline_ms, waited_for=waited_for)  # fmt: skip
            if _foreign(decision):
                assert isinstance(decision, Report)
                return decision
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


def _first_foreign(
    guarded: Guarded, busy: list[Attempt], effects: Effects, budget_s: float, elapsed_ms: int
) -> Report | None:
    """A range with many ports in use (16,000 client sockets in 10000-60000 on a busy host):
    its first busy port alone is read and attributed, and when someone else holds it that is
    the verdict, with the rest counted; only otherwise is every busy port looked at."""
    ports = {a.bind.port for a in busy}
    if len(ports) < 2:
        return None
    head = [a for a in busy if a.bind.port == busy[0].bind.port]
    attribution = _look(guarded, head, effects, budget_s)
    decision = decide(guarded, head, attribution, elapsed_ms=elapsed_ms,
                      deadline_ms=guarded.wait_ms)  # fmt: skip
    if not _foreign(decision):
        return None
    assert isinstance(decision, Report)
    more = f" ({len(ports) - 1:,} more of its ports are in use; 'portguard why PORT' names each)"
    return replace(decision, summary=decision.summary + more)


def _check_pools(
    guarded: Guarded, effects: Effects, elapsed_ms: Callable[[], int]
) -> Report | None:
    """None when every pool of the unit can serve (after its own remnants drained)."""
    assert effects.probe_pool is not None
    for claim in (c for c in guarded.claims if c.pool is not None):
        while True:
            families = effects.probe_pool(claim)
            if pools.serves(families):
                break
            ending = pools.refused(guarded, families)
            if ending is not None:
                return ending
            # Its first port in use, judged as any claim's: someone else's makes the pool
            # exhausted; the unit's own remnant is waited for; a `via` socket unit's serves it.
            attempt = pools.first_in_use(families)
            assert attempt is not None
            budget_s = (guarded.wait_ms - elapsed_ms()) / 1000
            attribution = _look(guarded, [attempt], effects, budget_s)
            decision = decide(guarded, [attempt], attribution, elapsed_ms=elapsed_ms(),
                              deadline_ms=guarded.wait_ms)  # fmt: skip
            if isinstance(decision, Wait):
                effects.wait(decision.pids, max(0, decision.until_ms - elapsed_ms()) / 1000)
                continue
            if decision.verdict is Verdict.FREE:
                break
            return exhausted(decision, families) if decision.verdict is Verdict.HELD else decision
    return None


def _foreign(decision: Report | Wait) -> bool:
    """Whether DECISION is `held` by a holder it names (who is not the unit nor its `via`)."""
    return (
        isinstance(decision, Report)
        and decision.verdict is Verdict.HELD
        and decision.owner is not None
    )


def _look(
    guarded: Guarded,
    busy: list[Attempt],
    effects: Effects,
    budget_s: float,
    census: Callable[[Iterable[tuple[Proto, int]]], list[Occupant]] | None = None,
) -> Attribution:
    """Who holds the busy binds (from CENSUS, by default the whole one), or, when the socket
    table cannot be read, only why not."""
    facts_timeout = max(0.2, min(1.0, budget_s))  # a silent bus costs at most this
    try:
        occupants = (census or effects.census)({(a.bind.claim.proto, a.bind.port) for a in busy})
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
            return unassignable(guarded, attempt.bind)
    for attempt in attempts:
        if attempt.outcome is Outcome.DENIED:
            return denied(guarded, attempt.bind)
    if any(a.outcome is Outcome.IN_USE for a in attempts):
        return None
    if waited_for is None:
        return free(guarded)
    return released(guarded, waited_for, elapsed_ms)


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
        found = blockers(attempt.bind, attribution.holdings, guarded.uid)
        if not found:
            return held_unknown(guarded, attempt.bind, attribution)
        for holding in found:
            its_role = role(holding, guarded)
            if its_role is Role.FOREIGN:
                return held(guarded, attempt.bind, holding, attribution)
            if its_role is not Role.DELEGATED:
                draining.append((attempt.bind, holding))
                pids.update(holding.owner.holder_pids)
                time_wait_ms = max(time_wait_ms, holding.occupant.expires_ms or 0)
    if not draining:
        # Every busy bind is held for the unit by a socket unit in its `via`.
        if waited_for is not None:
            return released(guarded, waited_for, elapsed_ms)
        return free(guarded, "held for it by 'via'")
    remaining = deadline_ms - elapsed_ms
    bind, blocker = draining[0]
    if not pids and time_wait_ms > remaining:
        return drain_timeout(guarded, bind, blocker, attribution,
                              elapsed_ms=elapsed_ms, time_wait_left_ms=time_wait_ms)  # fmt: skip
    if remaining <= 0:
        return drain_timeout(guarded, bind, blocker, attribution,
                              elapsed_ms=elapsed_ms, time_wait_left_ms=None)  # fmt: skip
    # Wake when a holder exits, or when the last TIME-WAIT timer runs out.
    step = time_wait_ms if time_wait_ms else (remaining if pids else _BLIND_RETRY_MS)
    return Wait(tuple(sorted(pids)), elapsed_ms + min(remaining, step), blocker)

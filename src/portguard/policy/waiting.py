"""`portguard wait`'s policy: until ports could be bound, or until something listens on them.

The probe (a trial bind with the options given) is the ground truth, as for `check`; unlike
`check`, every holder is waited for, since a deploy script's own old service is what it
waits on. It sleeps only where the kernel wakes it: the holders' exit (pidfd), a socket's
destruction (sock_diag's destroy notifications), the last TIME-WAIT timer; otherwise it
looks again at a short bounded interval. Every outside effect comes in through `Effects`.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.probe import Attempt, Outcome, PoolFamily
from portguard.policy import pools
from portguard.policy.owners import CENSUS_FAILED, Attribution, Holding, OwnerKind
from portguard.policy.report import describe_owner, remedy_for
from portguard.registry.claims import Claim, Proto, overlaps
from portguard.registry.timespan import format_ms

# Where no signal of the kernel's can wake the wait, it looks again this often; where one
# can, it still looks at least this often, in case the signal was not for the socket asked.
POLL_MS = 50
SIGNALLED_POLL_MS = 1000
# A TIME-WAIT timer runs out a little after the time it says (the kernel's timer wheel
# batches long timers): look again just after it, and then at the interval until it has.
TIMER_SLACK_MS = 5


class Wake(StrEnum):
    """What ended one sleep of the wait (`--json` lists them in order)."""

    EXIT = "exit"  # a holder's pidfd: the process exited
    DESTROY = "destroy"  # sock_diag: a socket on a waited port was destroyed
    TIMER = "timer"  # the last TIME-WAIT timer ran out
    INTERVAL = "interval"  # no signal to wait for: looked again


@dataclass(frozen=True)
class Effects:
    probe: Callable[[Sequence[Claim]], list[Attempt]]
    census: Callable[[Iterable[tuple[Proto, int]]], list[Occupant]]
    attribute: Callable[[list[Occupant]], Attribution]
    # Sleep until one of PIDS exits (EXIT), a socket of COOKIES is destroyed (DESTROY), or
    # SECONDS pass (None).
    sleep: Callable[[Sequence[int], Sequence[int], float], Wake | None]
    clock: Callable[[], float]  # monotonic seconds
    probe_pool: Callable[[Claim], list[PoolFamily]] | None = None  # needed for pools only


@dataclass(frozen=True)
class Waited:
    code: Exit
    line: str  # one line: what was found, and at a timeout who holds it and the fix
    elapsed_ms: int
    woke_by: tuple[Wake, ...] = ()
    holders: tuple[Holding, ...] = ()
    gaps: tuple[str, ...] = field(default=())


def until_free(claims: Sequence[Claim], timeout_ms: int, effects: Effects) -> Waited:
    """Return as soon as every claim could be bound (0); 68/77 at once where waiting cannot
    help; 75 at the timeout, naming who still holds what."""
    start = effects.clock()

    def elapsed_ms() -> int:
        return int((effects.clock() - start) * 1000)

    woke: list[Wake] = []
    # Holders' PIDs by the sockets they hold: attribution (cgroups, fds, systemd) runs again
    # only when the blocking sockets change, not at every wake of a long wait.
    holders: dict[frozenset[Occupant], tuple[int, ...]] = {}
    bound = [c for c in claims if c.pool is None]
    pools = [c for c in claims if c.pool is not None]
    while True:
        attempts = effects.probe(bound) + [a for c in pools for a in _pool_attempts(c, effects)]
        final = _settled(attempts, elapsed_ms(), tuple(woke), pools)
        if final is not None:
            return final
        busy = [a for a in attempts if a.outcome is Outcome.IN_USE]
        ports = sorted({(a.bind.claim.proto, a.bind.port) for a in busy})
        census_gap: str | None = None
        try:
            occupants = effects.census(ports)
        except (OSError, ImportError) as exc:
            occupants, census_gap = [], f"{CENSUS_FAILED}: {exc}"
        left_ms = timeout_ms - elapsed_ms()
        if left_ms <= 0:
            return _timed_out(busy, occupants, census_gap, effects, elapsed_ms=elapsed_ms(),
                              woke=tuple(woke))  # fmt: skip
        blocking = [o for o in occupants if any(_blocks(o, a) for a in busy)]
        key = frozenset(blocking)
        if key not in holders:
            holders[key] = _pids(effects, blocking)
        pids = holders[key]
        timer = _timer_ms(blocking)
        sleep_ms = min(left_ms, timer if timer is not None else _poll_ms(pids))
        cookies = [o.cookie for o in blocking if o.cookie and not o.is_time_wait]
        woken = effects.sleep(pids, cookies, sleep_ms / 1000)
        woke.append(woken or (Wake.TIMER if timer is not None else Wake.INTERVAL))


def _pool_attempts(claim: Claim, effects: Effects) -> list[Attempt]:
    """None when min-free of the pool could be bound (DESIGN rule 6); else the one attempt
    that stands for it: its first port in use (whose holder is waited for), or why none
    binds (the address is not here, the binds are denied)."""
    assert effects.probe_pool is not None
    families = effects.probe_pool(claim)
    if pools.serves(families):
        return []
    first = pools.first_in_use(families)
    return [first] if first else [f.refused for f in families if f.refused is not None][:1]


def _settled(
    attempts: list[Attempt], elapsed_ms: int, woke: tuple[Wake, ...], pools: Sequence[Claim] = ()
) -> Waited | None:
    for attempt in attempts:
        if attempt.outcome is Outcome.UNASSIGNABLE:
            line = f"{attempt.bind}: the address is not on this host (EADDRNOTAVAIL)"
            return Waited(Exit.NOHOST, f"{line}; waiting cannot change that", elapsed_ms, woke)
        if attempt.outcome is Outcome.DENIED:
            line = (f"{attempt.bind}: the bind is refused (EACCES: a port below 1024 without "
                    "the capability, or a policy)")  # fmt: skip
            return Waited(Exit.NOPERM, f"{line}; waiting cannot change that", elapsed_ms, woke)
    if any(a.outcome is Outcome.IN_USE for a in attempts):
        return None
    binds = ", ".join([*(str(a.bind) for a in attempts),
                       *(f"min-free {c.pool} of pool {c}" for c in pools)])  # fmt: skip
    return Waited(Exit.OK, f"{binds} free after {format_ms(elapsed_ms)}", elapsed_ms, woke)


def _blocks(occupant: Occupant, attempt: Attempt) -> bool:
    bind = attempt.bind
    return (occupant.proto, occupant.port) == (bind.claim.proto, bind.port) and overlaps(
        occupant.as_claim(), bind.claim
    )


def _pids(effects: Effects, blocking: list[Occupant]) -> tuple[int, ...]:
    """The processes holding the blocking sockets (none for TIME-WAIT: no process has it)."""
    held = [o for o in blocking if not o.is_time_wait]
    if not held:
        return ()
    attribution = effects.attribute(held)
    return tuple(sorted({pid for h in attribution.holdings for pid in h.owner.holder_pids}))


def _timer_ms(blocking: list[Occupant]) -> int | None:
    """When only TIME-WAIT blocks: until its last timer runs out."""
    if blocking and all(o.is_time_wait and o.expires_ms is not None for o in blocking):
        return max(POLL_MS, max(o.expires_ms or 0 for o in blocking) + TIMER_SLACK_MS)
    return None


def _poll_ms(pids: Sequence[int]) -> int:
    """A bounded interval, longer when a holder's exit can end it sooner; a socket closed by
    a process that lives on ends it through its destroy notification (as root)."""
    return SIGNALLED_POLL_MS if pids else POLL_MS


def _timed_out(
    busy: list[Attempt],
    occupants: list[Occupant],
    census_gap: str | None,
    effects: Effects,
    *,
    elapsed_ms: int,
    woke: tuple[Wake, ...],
) -> Waited:
    attribution = effects.attribute(occupants) if occupants else Attribution(())
    gaps = tuple(g for g in (census_gap, *attribution.gaps) if g)
    attempt = busy[0]
    holding = next((h for h in attribution.holdings if _blocks(h.occupant, attempt)), None)
    still = f"{attempt.bind} is still in use after {format_ms(elapsed_ms)}"
    if holding is None:
        known = f" ({'; '.join(gaps)})" if gaps else ""
        line = (f"{still}, by a holder not found out{known}; run 'portguard why "
                f"{attempt.bind.port}/{attempt.bind.claim.proto}' as root to name it")  # fmt: skip
    elif holding.owner.kind is OwnerKind.TIME_WAIT:
        line = (f"{still}: {describe_owner(holding.owner)}, which the bind passes with "
                "--reuseaddr (SO_REUSEADDR), as most services set it")  # fmt: skip
    else:
        remedy = remedy_for(holding.owner, unit="the new service", port=attempt.bind.port,
                            proto=str(attempt.bind.claim.proto))  # fmt: skip
        line = f"{still}: held by {describe_owner(holding.owner)}; {remedy}"
    return Waited(Exit.TEMPFAIL, line, elapsed_ms, woke, attribution.holdings, gaps)


def until_listening(
    claims: Sequence[Claim], timeout_ms: int, effects: Effects, *, units: Sequence[str] = ()
) -> Waited:
    """Return when something listens on every claim (0), naming it; with UNITS (the unit and
    its `via`), only when one of them does: another listener is a squatter (69)."""
    start = effects.clock()

    def elapsed_ms() -> int:
        return int((effects.clock() - start) * 1000)

    ports = sorted({(c.proto, port) for c in claims for port in c.ports})
    woke: list[Wake] = []
    while True:
        try:
            occupants = effects.census(ports)
        except (OSError, ImportError) as exc:
            return Waited(Exit.UNAVAILABLE, f"{CENSUS_FAILED}: {exc}", elapsed_ms(), tuple(woke))
        listening = [o for o in occupants if o.state in ("LISTEN", "UNCONN")]
        found = [next((o for o in listening if _listens_on(o, c)), None) for c in claims]
        if all(found):
            listeners = [o for o in found if o]
            return _listener(listeners, units, effects, elapsed_ms=elapsed_ms(), woke=woke)
        left_ms = timeout_ms - elapsed_ms()
        if left_ms <= 0:
            missing = ", ".join(str(c) for c, o in zip(claims, found, strict=True) if o is None)
            line = f"nothing listens on {missing} after {format_ms(elapsed_ms())}"
            return Waited(Exit.TEMPFAIL, line, elapsed_ms(), tuple(woke))
        woke.append(effects.sleep((), (), min(left_ms, POLL_MS) / 1000) or Wake.INTERVAL)


def _listens_on(occupant: Occupant, claim: Claim) -> bool:
    return (
        occupant.proto is claim.proto
        and claim.first <= occupant.port <= claim.last
        and (claim.address is None or overlaps(occupant.as_claim(), claim))
    )


def _listener(
    found: list[Occupant],
    units: Sequence[str],
    effects: Effects,
    *,
    elapsed_ms: int,
    woke: list[Wake],
) -> Waited:
    attribution = effects.attribute(found)
    holdings = attribution.holdings
    whose = "; ".join(f"{h.occupant} by {describe_owner(h.owner)}" for h in holdings)
    whose = whose or ", ".join(str(o) for o in found)
    if units:
        strangers = [h for h in holdings if h.owner.unit not in units]
        if strangers or not holdings:
            who = describe_owner(strangers[0].owner) if strangers else "an unknown holder"
            line = (f"{strangers[0].occupant if strangers else found[0]} is listened on by "
                    f"{who}, not {units[0]}: a squatter, not a healthy deploy; 'portguard why "
                    f"{found[0].port}/{found[0].proto}' names the fix")  # fmt: skip
            return Waited(Exit.UNAVAILABLE, line, elapsed_ms, tuple(woke), holdings,
                          attribution.gaps)  # fmt: skip
    line = f"listening after {format_ms(elapsed_ms)}: {whose}"
    return Waited(Exit.OK, line, elapsed_ms, tuple(woke), holdings, attribution.gaps)

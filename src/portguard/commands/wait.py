"""`portguard wait`'s core: the ports (given, or a unit's registered claims), the real
effects, and the one line or JSON object a deploy script reads."""

import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from portguard.commands.check import guarded_for
from portguard.commands.trusted import registry_at
from portguard.errors import Exit, UsageError
from portguard.freepath.trust import REGISTRY_DIR
from portguard.host import probe, sockwatch
from portguard.host.occupants import Occupant
from portguard.policy.owners import Attribution, Holding
from portguard.policy.report import describe_owner
from portguard.policy.waiting import Effects, Waited, Wake, until_free, until_listening
from portguard.registry.claims import Claim, Proto


def run(
    claims: Sequence[Claim],
    *,
    unit: str | None,
    timeout_ms: int,
    reuseaddr: bool | None,
    listening: bool,
    registry: Path | None,
    as_json: bool,
) -> int:
    """Wait for CLAIMS, or with UNIT for its registered claims (CLAIMS then empty)."""
    units: tuple[str, ...] = ()
    if unit is not None:
        claims, units = _unit_claims(unit, reuseaddr, registry)
    if listening:
        # A pool has nothing listening until a client asks for a port of it.
        claims = tuple(c for c in claims if c.pool is None)
        if not claims:
            raise UsageError(f"{unit}'s claims are all pools, bound on demand: nothing listens "
                             "on them to wait for (wait without --listening for them to be "
                             "free)")  # fmt: skip
    with sockwatch.DestroyWatch({c.proto for c in claims}) as watch:
        effects = real_effects(watch)
        if listening:
            waited = until_listening(claims, timeout_ms, effects, units=units)
        else:
            waited = until_free(claims, timeout_ms, effects)
    if waited.code == 0 and not listening:
        bound = [c for c in claims if c.pool is None]  # a redirected pool port is skipped
        waited = until_not_redirected(waited, bound, timeout_ms, unit=unit)
    return report(waited, claims, listening=listening, as_json=as_json)


# How often a redirect's ruleset is looked at again: the generation number is one netlink
# round trip; the ruleset is read and judged again only when it changed.
_REDIRECT_POLL_S = 0.2


def until_not_redirected(
    waited: Waited, claims: Sequence[Claim], timeout_ms: int, *, unit: str | None
) -> Waited:
    """Free for bind() is not free when a NAT rule takes the traffic (DESIGN rule 5): a
    certain redirect is a holder that stays, until it goes or the timeout (75, naming it).
    A partial or unjudged one is said in the gaps and does not hold the wait."""
    from portguard.commands import redirects  # noqa: PLC0415
    from portguard.freepath import nat  # noqa: PLC0415

    own = {(c.proto, p) for c in claims for p in c.ports}
    name = unit or "the service"
    start = time.monotonic() - waited.elapsed_ms / 1000
    seen: int | None = None
    while True:
        generation = nat.generation()
        if generation is None or generation != seen:
            judged = redirects.look(claims, unit=name, own=own)
            seen = generation
        elapsed_ms = int((time.monotonic() - start) * 1000)
        if not judged.taken:
            notes = [redirects.summary(t) for t in judged.partly] + judged.gaps
            return replace(waited, elapsed_ms=elapsed_ms, gaps=(*waited.gaps, *notes))
        if elapsed_ms >= timeout_ms:
            taken = judged.taken[0]
            line = f"{redirects.summary(taken)}; {taken.taker.remedy}"
            return replace(waited, code=Exit.TEMPFAIL, line=line, elapsed_ms=elapsed_ms)
        time.sleep(min(_REDIRECT_POLL_S, (timeout_ms - elapsed_ms) / 1000))


def _unit_claims(
    unit: str, reuseaddr: bool | None, registry: Path | None
) -> tuple[tuple[Claim, ...], tuple[str, ...]]:
    root = registry or Path(REGISTRY_DIR)
    guarded = guarded_for(registry_at(root), unit)
    if guarded is None:
        raise UsageError(f"{unit} has no claims in the registry at {root}")
    claims = guarded.claims
    if reuseaddr is not None:
        claims = tuple(replace(c, reuseaddr=reuseaddr) for c in claims)
    return claims, (unit, *guarded.via)


def real_effects(watch: sockwatch.DestroyWatch) -> Effects:
    def census(ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
        from portguard.host.sockets import census as kernel_census  # noqa: PLC0415

        return kernel_census(ports)

    def attribute(occupants: list[Occupant]) -> Attribution:
        from portguard.commands.attribution import here  # noqa: PLC0415
        from portguard.policy.attribute import attribute as find_owners  # noqa: PLC0415

        return find_owners(occupants, here(self_cgroup=None, facts_timeout=1.0))

    def trial(claims: Sequence[Claim]) -> list[probe.Attempt]:
        return probe.probe(claims, None)

    def sleep(pids: Sequence[int], cookies: Sequence[int], seconds: float) -> Wake | None:
        woken = sockwatch.sleep(pids, cookies, seconds, watch)
        return Wake(woken) if woken else None

    def trial_pool(claim: Claim) -> list[probe.PoolFamily]:
        return probe.probe_pool(claim, None)

    return Effects(trial, census, attribute, sleep, time.monotonic, trial_pool)


def report(waited: Waited, claims: Sequence[Claim], *, listening: bool, as_json: bool) -> int:
    if as_json:
        print(json.dumps(_as_data(waited, claims, listening=listening), indent=2))
    elif waited.code == 0:
        print(waited.line)
    if waited.code != 0:
        print(f"portguard: {waited.line}", file=sys.stderr)
    return int(waited.code)


def _as_data(waited: Waited, claims: Sequence[Claim], *, listening: bool) -> dict[str, object]:
    return {
        "waited_for": "listening" if listening else "free",
        "claims": [str(c) for c in claims],
        "exit": int(waited.code),
        "message": waited.line,
        "waited_ms": waited.elapsed_ms,
        # What ended the last sleep (null: free at once): exit (a holder's pidfd), destroy
        # (sock_diag), timer (the last TIME-WAIT), interval (no signal to wait on: looked
        # again); and how often each ended one.
        "woke_by": str(waited.woke_by[-1]) if waited.woke_by else None,
        "wakes": dict(Counter(str(w) for w in waited.woke_by)),
        "holders": [_holder(h) for h in waited.holders],
        "gaps": list(waited.gaps),
    }


def _holder(holding: Holding) -> dict[str, object]:
    owner = holding.owner
    return {
        "socket": str(holding.occupant),
        "state": holding.occupant.state,
        "kind": str(owner.kind),
        "unit": owner.unit,
        "pid": owner.pid,
        "owner": describe_owner(owner),
    }

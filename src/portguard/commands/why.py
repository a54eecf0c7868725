"""`portguard why PORT`: the investigation an operator runs at 3 a.m., as one command.

The census and attribution are `check`'s own; this adds what a person asks next (the
process's command line, user, age and parent; the login session; the container) and
prints it most important first: who holds the port, what the registry says, the fix.
"""

import functools
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from portguard.commands.attribution import here
from portguard.commands.trusted import registry_at
from portguard.commands.whytext import as_data, render
from portguard.errors import ConfigError, NoRegistry, Unavailable
from portguard.host import docker, netns, processes, sessions
from portguard.host.occupants import Occupant
from portguard.host.units import FactsChild, UnitFacts
from portguard.policy.attribute import attribute
from portguard.policy.diagnosis import (
    Diagnosis,
    Elsewhere,
    Occupancy,
    Query,
    diagnose,
    group,
    is_registered,
)
from portguard.policy.owners import CENSUS_FAILED, Owner, OwnerKind
from portguard.registry.assignments import Assignment, assigned
from portguard.registry.claims import Claim, overlaps
from portguard.registry.entries import REGISTRY_DIR

if TYPE_CHECKING:
    from portguard.host.prefetch import Early

_FACTS_TIMEOUT = 2.0
_EARLY_CENSUS_S = 2.0  # how long the census a child began may take before we read it here
# Searching other network namespaces when the port is free here (issue 14): a bound.
_ELSEWHERE_SECONDS = 1.5


def run(
    query: Query, *, netns_target: str | None, registry: Path | None, as_json: bool,
    early: "Early | None" = None,
) -> int:  # fmt: skip
    """EARLY: the census a child began before this was loaded (host/prefetch.py)."""
    if netns_target:
        netns.enter(netns_target)
    diagnosis = investigate(query, registry or REGISTRY_DIR, netns=netns_target, early=early)
    code = int(diagnosis.exit_code)
    traffic = _traffic(query) if code == 0 else None
    if as_json:
        data = as_data(diagnosis)
        if traffic is not None:
            data["redirects"], code = traffic[1], traffic[2]
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(render(diagnosis))
        if traffic is not None and traffic[0]:
            sys.stdout.write(traffic[0])
            code = traffic[2]
    return code


def _traffic(query: Query) -> tuple[str, list[dict[str, object]], int]:
    """Where NAT sends the free port's traffic (DESIGN rule 5): text, data and exit code --
    1 for a certain redirect, as for a holder; 0 for a partial or unjudged one."""
    from portguard.commands import redirects  # noqa: PLC0415

    judged = redirects.look(query.claims(), unit="the registered service")
    lines, data = [], []
    for taken in [*judged.taken, *judged.partly]:
        t = taken.taker
        how = "redirected" if taken.certain else "partly redirected"
        lines.append(f"nothing listens on {taken.port}/{taken.claim.proto} here, but "
                     f"{taken.family} traffic to it is {how} by {t.name} to {t.to} "
                     f"({t.location})\n  fix: {t.remedy}\n")  # fmt: skip
        data.append({"port": taken.port, "proto": str(taken.claim.proto), "family": taken.family,
                     "certain": taken.certain, "owner_kind": t.kind, "owner": t.name,
                     "to": t.to, "rule": {"family": t.family, "table": t.table,
                     "chain": t.chain, "handle": t.handle}, "remedy": t.remedy})  # fmt: skip
    lines += [f"whether NAT takes the port could not be judged: {gap}\n" for gap in judged.gaps]
    return "".join(lines), data, 1 if judged.taken else 0


def investigate(
    query: Query, registry: Path, *, netns: str | None = None, early: "Early | None" = None
) -> Diagnosis:
    """Everything on the port in this network namespace, who owns it, and the fix."""
    # systemd is asked by a child that connects while the socket table is read.
    with early.facts if early is not None else FactsChild() as facts:
        facts.start()
        ports = [(proto, query.port) for proto in query.protos]
        occupants = early.census(ports, _EARLY_CENSUS_S) if early is not None else None
        try:
            if occupants is None:
                from portguard.host.sockets import census  # noqa: PLC0415 - pyroute2 when asked

                occupants = census(ports)
        except (OSError, ImportError) as exc:  # no netlink here, or no pyroute2 installed
            raise Unavailable(f"{CENSUS_FAILED}: {exc}") from None
        wanted = query.claims()
        occupants = [o for o in occupants if any(overlaps(o.as_claim(), c) for c in wanted)]
        candidates, note = _registered(query, registry)
        # A `%i` claim matches any port as an instance name; it counts only for an instance
        # systemd has loaded, so the same query that names the owners lists them.
        instances = sorted({a.unit for a in candidates if a.unit != a.entry.name})
        context = replace(
            here(self_cgroup=None, facts_timeout=_FACTS_TIMEOUT),
            facts=functools.partial(facts, patterns=instances) if instances else facts,
        )
        attribution = attribute(occupants, context)
    assignments = [a for a in candidates if a.unit == a.entry.name or a.unit in attribution.facts]
    owners, time_wait = group(attribution.holdings)
    occupancies = [
        _occupancy(owner, sockets, attribution.facts, assignments)
        for owner, sockets in owners.items()
    ]
    gaps = list(attribution.gaps)
    elsewhere: list[Elsewhere] = []
    if not occupants and netns is None:
        elsewhere = _elsewhere(query, gaps)
    return diagnose(query, occupancies, time_wait, assignments, gaps=gaps, netns=netns,
                    registry_note=note, registry_exists=registry.exists(),
                    elsewhere=elsewhere, serving=_serving(assignments))  # fmt: skip


def _serving(assignments: Sequence[Assignment]) -> dict[Claim, bool]:
    """Whether each pool among ASSIGNMENTS can serve now: trial binds, as `check` makes them
    (as this process, which is the unit's identity when root runs `why` for it)."""
    from portguard.host.probe import probe_pool  # noqa: PLC0415
    from portguard.policy.pools import serves  # noqa: PLC0415

    pools = {a.claim for a in assignments if a.claim.pool is not None}
    return {claim: serves(probe_pool(claim)) for claim in pools}


def _elsewhere(query: Query, gaps: list[str]) -> list[Elsewhere]:
    """Where else the port is bound: the named namespaces and every process's own one,
    each searched from inside it, within a bound; what could not be searched goes to GAPS."""
    from portguard.host.sockets import census  # noqa: PLC0415 - pyroute2 only when asked

    wanted = query.claims()

    def bound_here() -> list[Occupant]:
        found = census((proto, query.port) for proto in query.protos)
        return [o for o in found if not o.is_time_wait
                and any(overlaps(o.as_claim(), c) for c in wanted)]  # fmt: skip

    namespaces, unreadable = netns.others()
    seen, missed = netns.look_inside(namespaces, bound_here, seconds=_ELSEWHERE_SECONDS)
    why = " (entering them needs root)" if os.geteuid() != 0 else ""
    if missed:
        gaps.append(f"{_count(len(missed), 'other network namespace')} not searched{why}")
    if unreadable:
        gaps.append(f"the network namespaces of {_count(unreadable, 'process', 'es')} "
                    f"not read{why}")  # fmt: skip
    found = [(namespace, o) for namespace, occupants in seen for o in occupants]
    if not found:
        return []
    context = here(self_cgroup=None, facts_timeout=_FACTS_TIMEOUT)
    attribution = attribute((o for _, o in found), context)
    gaps.extend(attribution.gaps)
    grouped: dict[tuple[str, Owner], list[Occupant]] = {}
    for (namespace, occupant), holding in zip(found, attribution.holdings, strict=True):
        grouped.setdefault((_label(namespace), holding.owner), []).append(occupant)
    return [Elsewhere(label, owner, tuple(_unique(sockets)))
            for (label, owner), sockets in grouped.items()]  # fmt: skip


def _count(n: int, word: str, plural: str = "s") -> str:
    return f"{n} {word}{'' if n == 1 else plural}"


def _label(namespace: netns.Namespace) -> str:
    return f"netns {namespace.name}" if namespace.name else f"the namespace of pid {namespace.pid}"


def _registered(query: Query, path: Path) -> tuple[list[Assignment], str | None]:
    """Who the registry gives the port to; a broken registry must not stop the diagnosis."""
    try:
        registry = registry_at(path)
    except NoRegistry as exc:
        return [], exc.message
    except ConfigError as exc:
        return [], f"the registry could not be used: {exc.message}"
    found = [a for claim in query.claims() for a in assigned(registry, claim)]
    return list(dict.fromkeys(found)), None


def _occupancy(
    owner: Owner,
    sockets: Sequence[Occupant],
    facts: Mapping[str, UnitFacts],
    assignments: Sequence[Assignment],
) -> Occupancy:
    process = processes.process(owner.pid) if owner.pid else None
    parent = processes.process(process.ppid) if process and process.ppid else None
    session = None
    if owner.kind is OwnerKind.SESSION and owner.unit:
        session = sessions.session(sessions.session_of_scope(owner.unit) or "")
    forwards = None
    if process and process.comm == "docker-proxy":
        forwards = docker.proxy_target(process.cmdline)
    return Occupancy(
        owner, tuple(_unique(sockets)), facts.get(owner.unit or ""), process, parent, session,
        forwards, is_registered(owner, assignments),
    )  # fmt: skip


def _unique(sockets: Iterable[Occupant]) -> list[Occupant]:
    return list(dict.fromkeys(sockets))

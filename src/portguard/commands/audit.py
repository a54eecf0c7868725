"""`portguard audit`: every claim of the registry against the sockets bound now.

The census and attribution are `check`'s own (sockets.census, attribute.attribute); what is
new here is the judgement per claim, which is pure (`classify`), and the three renderings.
Every outside effect enters through `Sources`, so the judgement is testable without a kernel.
"""

import errno
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from portguard.errors import CannotWrite, Exit, Unavailable
from portguard.host.files import write_atomically
from portguard.host.occupants import Occupant
from portguard.host.units import FactsUnavailable, UnitFacts
from portguard.policy.owners import CENSUS_FAILED, Attribution, Holding, Owner
from portguard.policy.report import describe_owner
from portguard.registry.assignments import Assignment, assignments
from portguard.registry.claims import Claim, Proto, overlaps
from portguard.registry.entries import REGISTRY_DIR, Registry
from portguard.registry.localports import LocalPorts
from portguard.registry.unitname import UnitNameKind, unit_name_kind

FACTS_TIMEOUT = 2.0
_LISTENING = ("LISTEN", "UNCONN")


class Status(StrEnum):
    SQUATTED = "squatted"  # held by someone who is neither the unit nor one of its `via`
    MISSING = "missing"  # the unit (or a `via` unit) is active, yet nothing holds the port
    OK = "ok"  # held by the unit or one of its `via`
    IDLE = "idle"  # the unit is not running and the port is free


# Rows are shown most important first; the summary reads in the spec's order.
ROW_ORDER = (Status.SQUATTED, Status.MISSING, Status.OK, Status.IDLE)
SUMMARY_ORDER = (Status.OK, Status.SQUATTED, Status.MISSING, Status.IDLE)
DRIFT = frozenset({Status.SQUATTED, Status.MISSING})


@dataclass(frozen=True, slots=True)
class Row:
    """One claim and how it stands. `holders` are whom the HOLDER column names: the foreign
    owners of a squatted claim, the unit's own sockets' owners of an ok one, none otherwise."""

    assignment: Assignment
    status: Status
    holders: tuple[Owner, ...] = ()


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


# --- the judgement (pure) ---------------------------------------------------------------------


def classify(
    claims: Iterable[Assignment],
    holdings: Sequence[Holding],
    facts: Mapping[str, UnitFacts] | None,
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
    rows = [judge(claim, _on_ports(claim.claim, by_port), facts) for claim in claims]
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
    rows = classify(concrete, attribution.holdings, facts)
    found = None
    if unregistered:
        listeners = set(listening)
        held = [h for h in attribution.holdings if h.occupant in listeners]
        found = strays(held, [a.claim for a in concrete], sources.local_ports())
    all_gaps = tuple(dict.fromkeys([*gaps, *attribution.gaps]))
    return Audit(rows, found, all_gaps, sources.clock())


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


def real_sources() -> Sources:
    def census(ports: set[tuple[Proto, int]]) -> list[Occupant]:
        from portguard.host.sockets import holders_census as kernel_census  # noqa: PLC0415

        return kernel_census(ports)

    def listeners() -> list[Occupant]:
        from portguard.host.sockets import listeners as kernel_listeners  # noqa: PLC0415

        return kernel_listeners()

    def attribute(occupants: list[Occupant], facts: FactsQuery) -> Attribution:
        from portguard.policy.attribute import Context  # noqa: PLC0415
        from portguard.policy.attribute import attribute as find_owners  # noqa: PLC0415

        here = Context.here(self_cgroup=None, facts_timeout=FACTS_TIMEOUT)
        return find_owners(occupants, replace(here, facts=facts))

    from portguard.host.sysctl import read_local_ports  # noqa: PLC0415
    from portguard.host.units import unit_facts  # noqa: PLC0415

    return Sources(unit_facts, census, listeners, attribute, read_local_ports, time.time)


# --- text and JSON ------------------------------------------------------------------------------


def render_text(audit: Audit) -> str:
    """An aligned table, most important first, then a one-line summary."""
    table = [("STATUS", "UNIT", "CLAIM", "HOLDER")]
    for row in audit.rows:
        holder = ", ".join(describe_owner(o) for o in row.holders) or "-"
        table.append((str(row.status), row.assignment.unit, str(row.assignment.claim), holder))
    for stray in audit.unregistered or ():
        table.append(("unregistered", "-", str(stray.occupant), describe_owner(stray.owner)))
    cells = [[_printable(cell) for cell in line] for line in table]
    widths = [max(len(line[i]) for line in cells) for i in range(3)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[3]])
        for line in cells
    ]
    return "\n".join([*lines, summary_line(audit)]) + "\n"


def summary_line(audit: Audit) -> str:
    total = len(audit.rows)
    counts = ", ".join(f"{audit.count(s)} {s}" for s in SUMMARY_ORDER)
    line = f"{total} claim{'' if total == 1 else 's'}: {counts}"
    if audit.unregistered is not None:
        n = len(audit.unregistered)
        line += f"; {n} unregistered listener{'' if n == 1 else 's'}"
    return line


def _printable(text: str) -> str:
    """A process may name itself anything, newlines included; a table row stays one line."""
    return "".join(c if c.isprintable() else "?" for c in text)


def as_data(audit: Audit) -> dict[str, Any]:
    """For --format json. `unregistered` is null unless --unregistered was given."""
    summary: dict[str, Any] = {"claims": len(audit.rows)}
    summary.update({str(s): audit.count(s) for s in SUMMARY_ORDER})
    strays_data = None
    if audit.unregistered is not None:
        strays_data = [_stray_data(s) for s in audit.unregistered]
        summary["unregistered"] = len(strays_data)
    return {
        "claims": [_row_data(row) for row in audit.rows],
        "unregistered": strays_data,
        "summary": summary,
        "gaps": list(audit.gaps),
        "timestamp": audit.timestamp,
    }


def _row_data(row: Row) -> dict[str, Any]:
    a = row.assignment
    return {
        "unit": a.unit,
        "claim": str(a.claim),
        "proto": str(a.claim.proto),
        "port": a.claim.first,
        "last_port": a.claim.last,
        "address": None if a.claim.address is None else str(a.claim.address),
        "status": str(row.status),
        "team": a.team,
        "holders": [owner_data(o) for o in row.holders],
    }


def _stray_data(stray: Stray) -> dict[str, Any]:
    o = stray.occupant
    return {
        "proto": str(o.proto),
        "port": o.port,
        "address": str(o.address),
        "state": o.state,
        "holder": owner_data(stray.owner),
    }


def owner_data(owner: Owner) -> dict[str, Any]:
    return {
        "kind": str(owner.kind),
        "unit": owner.unit,
        "pid": owner.pid,
        "comm": owner.comm,
        "user": owner.user,
        "container": owner.container,
        "container_name": owner.container_name,
        "cgroup": owner.cgroup,
        "description": describe_owner(owner),
    }


# --- the command ------------------------------------------------------------------------------


def load(path: Path) -> Registry:
    """The registry, validated and trusted as `check` requires, or a ConfigError (78)."""
    from portguard.commands.trusted import registry_at  # noqa: PLC0415

    return registry_at(path)


def render(audit: Audit, output: str) -> str:
    if output == "json":
        return json.dumps(as_data(audit), indent=2) + "\n"
    if output == "prometheus":
        from portguard.commands.exposition import render_audit  # noqa: PLC0415

        return render_audit(audit)
    return render_text(audit)


def write_metrics(path: Path, text: str) -> None:
    """TEXT at PATH, whole or not at all (node_exporter may read it at any moment); CannotWrite
    (73) when it cannot be."""
    try:
        write_atomically(path, text)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not path.parent.is_dir():
            raise CannotWrite(
                f"cannot write {path}: directory {path.parent} does not exist"
            ) from None
        raise CannotWrite(f"cannot write {path}: {exc.strerror}") from None


def run(
    registry: Path | None,
    *,
    output: str,
    unregistered: bool,
    destination: Path | None = None,
    sources: Sources | None = None,
) -> int:
    """Audit the registry at REGISTRY (default /etc/portguard): 0 clean, 1 drift, 78 config.

    With DESTINATION the rendering replaces that file atomically instead of going to stdout,
    after a clean audit and after drift alike; 73 when it cannot be written.
    """
    loaded = load(registry or REGISTRY_DIR)
    audit = gather(loaded, sources or real_sources(), unregistered=unregistered)
    if output != "json":
        # Said once, on stderr: the table or the metrics file stays clean.
        for gap in audit.gaps:
            print(f"portguard: not found out: {gap}", file=sys.stderr)
    text = render(audit, output)
    if destination is None:
        sys.stdout.write(text)
    else:
        write_metrics(destination, text)
    return int(audit.exit_code)

"""A diagnosis as an operator reads it at 3 a.m. (short, aligned, most important first) and as
JSON with the same facts.
"""

import dataclasses
import enum
import ipaddress
import textwrap
from collections.abc import Sequence
from typing import Any

from portguard.host.occupants import Occupant
from portguard.host.processes import Process, user_name
from portguard.policy.diagnosis import Diagnosis, Occupancy, elsewhere_lines
from portguard.policy.kinds import kind_of, when
from portguard.policy.report import describe_owner
from portguard.registry.assignments import Assignment

_LABEL = 11  # width of the label column
_WIDTH = 100
_CMDLINE_MAX = 120


def headline(diagnosis: Diagnosis) -> str:
    query = diagnosis.query
    where = f" in network namespace {diagnosis.netns}" if diagnosis.netns else ""
    registry = _registry_phrase(diagnosis)
    if diagnosis.occupancies:
        first = diagnosis.occupancies[0]
        owner = describe_owner(first.owner)
        if first.registered:
            return f"{query} is held{where} by {owner}, its registered owner"
        return f"{query} is held{where} by {owner} — {registry}"
    if diagnosis.time_wait:
        tw = diagnosis.time_wait
        return (
            f"{query}{where} has {_count(tw.count, 'connection')} in TIME-WAIT, the last "
            f"ends in {tw.seconds_left} s — {registry}"
        )
    if diagnosis.elsewhere:
        nearest = diagnosis.elsewhere[0]
        more = len(diagnosis.elsewhere) - 1
        also = f" and {_count(more, 'more socket owner')}" if more else ""
        return (
            f"{query} is free here; held in {nearest.namespace} by "
            f"{describe_owner(nearest.owner)}"
            f"{also} — {registry}"
        )
    return f"{query} is free{where or ' in this network namespace'} — {registry}"


def _registry_phrase(diagnosis: Diagnosis) -> str:
    if diagnosis.registry_note:
        return "registry not read" if diagnosis.registry_exists else "no registry"
    units = dict.fromkeys(
        a.unit + (f" ({a.team})" if a.team else "")
        + (f" as part of its pool {a.claim}" if a.claim.pool is not None else "")
        for a in diagnosis.assignments
    )  # fmt: skip
    return f"registered to {', '.join(units)}" if units else "not in the registry"


def render(diagnosis: Diagnosis) -> str:
    lines = [headline(diagnosis), ""]
    for occupancy in diagnosis.occupancies:
        lines += _occupancy(occupancy)
        lines.append("")
    if diagnosis.time_wait:
        tw = diagnosis.time_wait
        lines += [_row("time-wait", f"{_count(tw.count, 'connection')}, the last ends in "
                                    f"{tw.seconds_left} s; no process holds them"), ""]  # fmt: skip
    if diagnosis.elsewhere:
        lines += [*_rows("elsewhere", elsewhere_lines(diagnosis.elsewhere)), ""]
    lines += _registry_rows(diagnosis)
    lines += _rows("fix", diagnosis.fixes or _free_hint(diagnosis))
    lines += _rows("unknown", diagnosis.gaps)
    return "\n".join(lines) + "\n"


def _free_hint(diagnosis: Diagnosis) -> list[str]:
    if diagnosis.occupied:
        return []
    if diagnosis.elsewhere:
        return [
            "nothing to fix on this host's stack: a port in another network namespace does not "
            "block a bind here; to look at one: portguard why "
            f"{diagnosis.query} --netns NAME|PID"
        ]
    return [
        "nothing to fix here; a service with PrivateNetwork= or NetworkNamespacePath= binds in "
        f"its own namespace: portguard why {diagnosis.query} --netns NAME|PID"
    ]


def _registry_rows(diagnosis: Diagnosis) -> list[str]:
    if diagnosis.registry_note:
        return [_row("registry", diagnosis.registry_note)]
    rows = [
        f"{a.claim} → {a.unit}" + (f" ({a.team})" if a.team else "")
        + (f", a pool (min-free {a.claim.pool})" if a.claim.pool is not None else "")
        + (f", via {', '.join(a.entry.via)}" if a.entry.via else "")
        + f"  [{a.listen.location}]"
        for a in diagnosis.assignments
    ]  # fmt: skip
    return _rows("registry", rows or ["no claim covers this port"])


def _occupancy(occupancy: Occupancy) -> list[str]:
    rows = [_row("sockets", _sockets(occupancy.sockets))]
    if occupancy.process:
        rows += _process(occupancy.process, occupancy.parent)
        others = [p for p in occupancy.owner.pids if p != occupancy.process.pid]
        if others:
            rows.append(_row("", f"also held by pid {', '.join(map(str, others))}"))
    rows += _owner(occupancy)
    return rows


def _sockets(sockets: Sequence[Occupant]) -> str:
    listening = [f"{s.state} {s}" for s in sockets if s.state in ("LISTEN", "UNCONN")]
    others = len(sockets) - len(listening)
    text = ", ".join(listening)
    if others:
        text += (" and " if text else "") + _count(others, "connection")
    return text


def _process(process: Process, parent: Process | None) -> list[str]:
    command = " ".join(process.cmdline) or f"[{process.comm}]"
    if len(command) > _CMDLINE_MAX:
        command = command[: _CMDLINE_MAX - 1] + "…"
    facts = [f"user {user_name(process.uid)}"] if process.uid is not None else []
    if process.started:
        facts.append(f"started {when(process.started)}")
    if parent:
        facts.append(f"parent {parent.pid} {parent.comm or ''}".rstrip())
    return [_row("process", f"pid {process.pid} {command}"), _row("", " · ".join(facts))]


def _owner(occupancy: Occupancy) -> list[str]:
    return [_row(label, text) for label, text in kind_of(occupancy.owner).why(occupancy)]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _row(label: str, text: str) -> str:
    """LABEL, then TEXT wrapped under its own column, so long fixes stay readable."""
    lines = textwrap.wrap(text, _WIDTH - _LABEL, break_on_hyphens=False, break_long_words=False)
    head, *rest = lines or [""]
    return "\n".join([f"{label:<{_LABEL}}{head}".rstrip(), *(" " * _LABEL + r for r in rest)])


def _rows(label: str, texts: Sequence[str]) -> list[str]:
    return [_row(label if i == 0 else "", text) for i, text in enumerate(texts)]


# --- JSON -------------------------------------------------------------------------------------


def as_data(diagnosis: Diagnosis) -> dict[str, Any]:
    """The same facts as the text, for machines."""
    query = diagnosis.query
    time_wait = diagnosis.time_wait
    return {
        "port": query.port,
        "protos": [str(p) for p in query.protos],
        "address": str(query.address) if query.address else None,
        "netns": diagnosis.netns,
        "occupied": diagnosis.occupied,
        "headline": headline(diagnosis),
        "occupants": [_plain(o) for o in diagnosis.occupancies],
        "time_wait": (
            {
                "count": time_wait.count,
                "last_ms": time_wait.last_ms,
                "seconds_left": time_wait.seconds_left,
            }
            if time_wait
            else None
        ),
        "registry": [_assignment(a) for a in diagnosis.assignments],
        "elsewhere": [
            {"namespace": e.namespace, "owner": _plain(e.owner), "sockets": _plain(e.sockets)}
            for e in diagnosis.elsewhere
        ],
        "registry_note": diagnosis.registry_note,
        "fixes": list(diagnosis.fixes),
        "gaps": list(diagnosis.gaps),
        "exit_code": int(diagnosis.exit_code),
    }


def _assignment(assignment: Assignment) -> dict[str, Any]:
    return {
        "unit": assignment.unit,
        "claim": str(assignment.claim),
        "team": assignment.team,
        "via": list(assignment.entry.via),
        "pool": None if assignment.claim.pool is None else {"min_free": assignment.claim.pool},
        "location": str(assignment.listen.location),
    }


def _plain(value: Any) -> Any:
    """Dataclasses, addresses and enums as JSON's types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Process):
            data["user"] = user_name(value.uid)
        return data
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, enum.Enum)):
        return str(value)
    return value

"""`portguard audit`: every claim of the registry against the sockets bound now.

The judgement is policy/audit.py's; here are the real sources it is given (the kernel's
census, attribution, systemd's facts), the text and JSON renderings (the metrics are
exposition.py's), and the file node_exporter reads.
"""

import errno
import functools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from portguard.errors import CannotWrite
from portguard.host.files import write_atomically
from portguard.host.occupants import Occupant
from portguard.policy.audit import (
    FACTS_TIMEOUT,
    SUMMARY_ORDER,
    Audit,
    FactsQuery,
    Row,
    Sources,
    Status,
    Stray,
    Traffic,
    gather,
)
from portguard.policy.owners import Attribution, Owner
from portguard.policy.redirects import Judged
from portguard.policy.report import describe_owner
from portguard.registry.claims import Claim, Proto
from portguard.registry.entries import REGISTRY_DIR, Registry


def real_sources() -> Sources:
    def census(ports: set[tuple[Proto, int]]) -> list[Occupant]:
        from portguard.host.sockets import holders_census as kernel_census  # noqa: PLC0415

        return kernel_census(ports)

    def listeners() -> list[Occupant]:
        from portguard.host.sockets import listeners as kernel_listeners  # noqa: PLC0415

        return kernel_listeners()

    def attribute(occupants: list[Occupant], facts: FactsQuery) -> Attribution:
        from portguard.commands.attribution import here as real_context  # noqa: PLC0415
        from portguard.policy.attribute import attribute as find_owners  # noqa: PLC0415

        here = real_context(self_cgroup=None, facts_timeout=FACTS_TIMEOUT)
        return find_owners(occupants, replace(here, facts=facts))

    def pool_serves(claim: Claim) -> bool:
        from portguard.host.probe import probe_pool  # noqa: PLC0415
        from portguard.policy.pools import serves  # noqa: PLC0415

        return serves(probe_pool(claim))

    from portguard.host.sysctl import read_local_ports  # noqa: PLC0415
    from portguard.host.units import unit_facts  # noqa: PLC0415

    return Sources(unit_facts, census, listeners, attribute, read_local_ports, time.time,
                   traffic_here(), pool_serves)  # fmt: skip


def traffic_here() -> Traffic:
    """Where NAT sends each free claim's traffic, from one reading of the ruleset and of this
    host's addresses, made when the first free claim asks."""
    from portguard.commands import redirects  # noqa: PLC0415

    ruleset = functools.cache(redirects.ruleset_here)
    host = functools.cache(redirects.host_here)

    def traffic(unit: str, claim: Claim, own: frozenset[tuple[Proto, int]]) -> Judged:
        found = ruleset()
        if isinstance(found, str):
            return Judged(gaps=[found])
        return redirects.look([claim], unit=unit, own=own, ruleset=found, host=host())

    return traffic


# --- text and JSON ------------------------------------------------------------------------------


def render_text(audit: Audit) -> str:
    """An aligned table, most important first, then a one-line summary."""
    table = [("STATUS", "UNIT", "CLAIM", "HOLDER")]
    for row in audit.rows:
        holder = ", ".join(describe_owner(o) for o in row.holders) or "-"
        if row.taker is not None:
            some = "" if row.status is Status.REDIRECTED else "some traffic: "
            holder = f"{some}NAT to {row.taker.to} by {row.taker.name} ({row.taker.location})"
        if row.pool is not None:
            holder = pool_text(row)
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


def pool_text(row: Row) -> str:
    """A pool's HOLDER cell: who holds how many of its ports, and whether it can serve."""
    use = row.pool
    assert use is not None
    need = row.assignment.claim.pool
    serves = {True: f"min-free {need} bindable", False: f"fewer than min-free {need} bindable",
              None: "not tried"}[use.serves]  # fmt: skip
    text = f"pool: {use.others:,} port(s) held by others, {use.own:,} by its unit; {serves}"
    if row.holders:
        text += f"; first: {describe_owner(row.holders[0])}"
    return text


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
        "redirect": None if row.taker is None else _taker_data(row),
        "pool": None if row.pool is None else _pool_data(row),
    }


def _pool_data(row: Row) -> dict[str, Any]:
    use = row.pool
    assert use is not None
    return {
        "min_free": row.assignment.claim.pool,
        "ports": row.assignment.claim.size,
        "held_by_others": use.others,
        "held_by_unit": use.own,
        "serves": use.serves,
    }


def _taker_data(row: Row) -> dict[str, Any]:
    t = row.taker
    assert t is not None
    return {
        "certain": row.status is Status.REDIRECTED,
        "owner_kind": t.kind,
        "owner": t.name,
        "to": t.to,
        "rule": {"family": t.family, "table": t.table, "chain": t.chain, "handle": t.handle},
        "remedy": t.remedy,
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

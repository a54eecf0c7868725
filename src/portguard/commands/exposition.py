"""The audit as Prometheus metrics, in the text exposition format (version 0.0.4) that
node_exporter's textfile collector reads.

Every family has its HELP and TYPE first, its samples together, and no sample repeats a
label set; label values and HELP text are escaped as the format requires; the text ends
with a newline; no sample carries a timestamp (the textfile collector refuses them).
"""

import math
from dataclasses import dataclass, replace

from portguard.policy.audit import SUMMARY_ORDER, Audit, Row, Status, Stray
from portguard.policy.owners import Owner
from portguard.policy.report import describe_owner

CLAIM = "portguard_claim"
CLAIMS = "portguard_claims"
POOL_OTHERS = "portguard_pool_ports_held_by_others"
UNREGISTERED = "portguard_unregistered_listener"
GAPS = "portguard_audit_gaps"
TIMESTAMP = "portguard_audit_timestamp_seconds"

HELP = {
    CLAIM: "A claim of the portguard registry and how it stands: one series per claim, "
    "value 1. status is ok (held by its unit or a via unit), squatted (held by another "
    "owner, named in holder), exhausted (a pool fewer than min-free of whose ports could be "
    "bound; holder names the first holder), redirected (nothing holds it, but a NAT rule, "
    "named in holder, sends the traffic other hosts send to it elsewhere), missing (its unit "
    "is active but the port is not bound) or idle (its unit is inactive and the port is "
    "free). A pool (a range bound on demand) is ok or exhausted only.",
    CLAIMS: "Registry claims in each status (ok, squatted, exhausted, redirected, missing, "
    "idle); every status is always present.",
    POOL_OTHERS: "Ports of a pool (a range its unit binds on demand) that someone other than "
    "its unit or a via unit holds now; one series per pool.",
    UNREGISTERED: "Listening sockets that no registry claim covers, by address, port and "
    "owner (only with portguard audit --unregistered).",
    GAPS: "What the audit could not find out (e.g. systemd did not answer); 0 when it "
    "saw everything.",
    TIMESTAMP: "When the audit ran, in seconds since the Unix epoch.",
}

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # gauge, counter, ...
    help: str
    samples: dict[Labels, float]  # one sample per label set, in insertion order


def render_audit(audit: Audit) -> str:
    return render(audit_families(audit))


def audit_families(audit: Audit) -> list[Family]:
    claims = Family(CLAIM, "gauge", HELP[CLAIM], {})
    for row in audit.rows:
        # A unit listing the same claim twice (lint warns) is still one series.
        claims.samples[claim_labels(row)] = 1
    summary = Family(CLAIMS, "gauge", HELP[CLAIMS], {})
    for status in SUMMARY_ORDER:
        summary.samples[(("status", str(status)),)] = audit.count(status)
    families = [claims, summary]
    pools = Family(POOL_OTHERS, "gauge", HELP[POOL_OTHERS], {})
    for row in audit.rows:
        if row.pool is not None:
            pools.samples[claim_labels(row)[:5]] = row.pool.others
    families.append(pools)
    if audit.unregistered is not None:
        strays = Family(UNREGISTERED, "gauge", HELP[UNREGISTERED], {})
        for stray in audit.unregistered:
            labels = stray_labels(stray)
            strays.samples[labels] = strays.samples.get(labels, 0) + 1
        families.append(strays)
    families.append(Family(GAPS, "gauge", HELP[GAPS], {(): len(audit.gaps)}))
    stamp = round(audit.timestamp, 3)
    families.append(Family(TIMESTAMP, "gauge", HELP[TIMESTAMP], {(): stamp}))
    return [f for f in families if f.samples]


def claim_labels(row: Row) -> Labels:
    claim = row.assignment.claim
    ports = str(claim.first) if claim.first == claim.last else f"{claim.first}-{claim.last}"
    squatted = row.status is Status.SQUATTED
    holder = ", ".join(sorted({stable_name(o) for o in row.holders})) if squatted else ""
    if row.status is Status.EXHAUSTED and row.holders:
        holder = stable_name(row.holders[0])  # the first of many, not a label per client
    if row.status is Status.REDIRECTED and row.taker is not None:
        holder = row.taker.name
    return (
        ("unit", row.assignment.unit),
        ("port", ports),
        ("proto", str(claim.proto)),
        ("address", "*" if claim.address is None else str(claim.address)),
        ("team", row.assignment.team or ""),
        ("status", str(row.status)),
        ("holder", holder),
    )


def stray_labels(stray: Stray) -> Labels:
    occupant = stray.occupant
    return (
        ("port", str(occupant.port)),
        ("proto", str(occupant.proto)),
        ("address", str(occupant.address)),
        ("holder", stable_name(stray.owner)),
    )


def stable_name(owner: Owner) -> str:
    """The owner as described, without its PID: a label that changed with every restart
    would start a new series each time."""
    return describe_owner(replace(owner, pid=None, comm=None))


def render(families: list[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples.items():
            lines.append(f"{family.name}{format_labels(labels)} {format_value(value)}")
    return "".join(line + "\n" for line in lines)


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)

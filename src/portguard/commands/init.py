"""`portguard init`'s core: a registry written from the listeners present now.

The census and the attribution are `check`'s own (sockets.listeners, attribute.attribute);
policy/inventory.py decides, without touching the system, which unit each listener is
registered for; this module gathers the facts and writes the YAML. Whatever it writes is
validated with lint's own code first.
"""

import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import IO, Any

import yaml

from portguard.errors import PortguardError, Unavailable
from portguard.host.daemonconf import pools
from portguard.host.nfsconf import statd_ports
from portguard.host.sysctl import read_local_ports
from portguard.host.units import FactsUnavailable, UnitFacts
from portguard.policy.inventory import (
    DEFAULT_EPHEMERAL,
    Capture,
    Plan,
    PlannedUnit,
    claim_text,
    plan,
)
from portguard.policy.owners import CENSUS_FAILED
from portguard.registry.entries import RegistrySource
from portguard.registry.findings import Severity
from portguard.registry.lint import check_registry
from portguard.registry.localports import LocalPorts
from portguard.registry.model import load

FACTS_TIMEOUT = 2.0

_MODE_COMMENT = (
    "# A captured registry starts in 'warn' mode: the guard runs before each start and logs",
    "# a conflict, but never blocks the start. Review the units below, then set",
    "# 'mode: enforce' so that a unit whose port is held fails its start at once.",
)


class GeneratedRegistryInvalid(PortguardError):
    """What init wrote does not pass lint: a bug in init, never the user's to fix."""


# --- the YAML ------------------------------------------------------------------------------


def render(planned: Plan, capture: Capture) -> str:
    """The registry text: a header, version, defaults, units, then what was left out."""
    when = capture.taken_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# Written by 'portguard init' on {_one_line(capture.host)} at {when} from the",
        "# listeners present then, each under the unit that holds it (a socket unit's port",
        "# under the service it starts, with 'via'). Review it before installing it as",
        "# /etc/portguard/registry.yaml: every port here is guarded for its unit.",
        "version: 1",
        *_MODE_COMMENT,
        "defaults:",
        "  mode: warn",
    ]
    if planned.units:
        entries = {unit.name: _entry(unit) for unit in planned.units}
        dumped = yaml.safe_dump(
            {"units": entries}, sort_keys=False, default_flow_style=None,
            allow_unicode=True, width=2**16,
        )  # fmt: skip
        lines.extend(dumped.rstrip("\n").split("\n"))
    else:
        lines.append("units: {}  # no listener could be mapped to a system unit")
    lines.extend(_trailer(planned, capture))
    return "\n".join(lines) + "\n"


def _entry(unit: PlannedUnit) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if unit.description:
        entry["description"] = unit.description
    entry["listen"] = [claim_text(claim) for claim in unit.claims]
    if unit.via:
        entry["via"] = list(unit.via)
    return entry


def _trailer(planned: Plan, capture: Capture) -> list[str]:
    lines: list[str] = []
    if planned.unmapped:
        lines += ["", "# Not mapped to a unit:", *(f"# {_one_line(n)}" for n in planned.unmapped)]
    if planned.conflicts:
        lines += ["", "# Left out to keep the registry valid:"]
        lines += [f"# {_one_line(n)}" for n in planned.conflicts]
    if planned.volatile:
        lines += ["", "# Picked at random at each start, so not claimed (a claim would block the",
                  "# daemon once anything else lands on its old port):"]  # fmt: skip
        lines += [f"# {_one_line(n)}" for n in planned.volatile]
    if planned.clients:
        low, high = capture.local_ports.ephemeral if capture.local_ports else DEFAULT_EPHEMERAL
        lines += [
            "",
            f"# {planned.clients} UDP socket{'s' * (planned.clients != 1)} on ports of the "
            f"ephemeral range {low}-{high} (net.ipv4.ip_local_port_range): clients, left out.",
        ]
    if capture.redirected:
        lines += [
            "",
            "# Nothing listens, but NAT rules send the traffic elsewhere, so not claimed",
            "# (a unit given one of these ports would fail its start with 'redirected'):",
        ]
        lines += [f"# {_one_line(n)}" for n in capture.redirected]
    if capture.gaps:
        lines += ["", "# Not found out (the registry may be incomplete):"]
        lines += [f"# {_one_line(gap)}" for gap in capture.gaps]
    return lines


def _one_line(text: str) -> str:
    """TEXT fit for a YAML comment: no line breaks or other control characters."""
    return "".join(c if c.isprintable() else "?" for c in text)


def validate(text: str, local_ports: LocalPorts | None) -> None:
    """Lint TEXT with lint's own code; an error is init's bug, so it is raised, never hidden."""
    with tempfile.TemporaryDirectory(prefix="portguard-init-") as directory:
        path = Path(directory) / "registry.yaml"
        path.write_text(text, encoding="utf-8")
        findings = check_registry(load(RegistrySource(path)), local_ports)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        shown = str(errors[0]).replace(str(path), "<generated registry>")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise GeneratedRegistryInvalid(
            f"internal error: the registry written does not pass lint: {shown}{more}",
            hint="a portguard bug: please report it with the output of 'ss -tulpn'",
        )


# --- the real system -----------------------------------------------------------------------


def capture_here() -> Capture:
    """Every listener in this network namespace, attributed as `check` attributes them."""
    from portguard.commands.attribution import here  # noqa: PLC0415
    from portguard.policy.attribute import attribute  # noqa: PLC0415

    try:
        from portguard.host.sockets import listeners  # noqa: PLC0415

        held = listeners()
    except (OSError, ImportError) as exc:  # no netlink here, or no pyroute2 installed
        raise Unavailable(f"{CENSUS_FAILED}: {exc}") from None
    found = attribute(held, here(self_cgroup=None, facts_timeout=FACTS_TIMEOUT))
    facts = dict(found.facts)
    gaps = list(found.gaps)
    # A socket unit's service is not in the census when it has not started: ask for it too,
    # so its entry gets its description.
    services = sorted(
        {a for h in found.holdings for a in h.owner.activates if a.endswith(".service")}
        - set(facts)
    )
    if services:
        facts.update(_more_facts(services, gaps))
    from portguard.commands.redirects import taken_here  # noqa: PLC0415

    redirected, nat_gaps = taken_here()
    gaps += nat_gaps
    return Capture(
        holdings=found.holdings,
        facts=facts,
        gaps=tuple(gaps),
        local_ports=read_local_ports(),
        statd_ports=statd_ports(),
        host=os.uname().nodename,
        redirected=tuple(redirected),
        pools=pools(),
    )


def _more_facts(names: list[str], gaps: list[str]) -> dict[str, UnitFacts]:
    from portguard.host.units import unit_facts  # noqa: PLC0415

    try:
        return unit_facts(names, timeout=FACTS_TIMEOUT)
    except FactsUnavailable as exc:
        gaps.append(f"{exc}; descriptions of socket-activated services are missing")
        return {}


def run(*, capture: Callable[[], Capture] | None = None, out: IO[str] | None = None) -> int:
    """Print the registry for what listens now; exit 0 (70 when it would not pass lint)."""
    captured = (capture or capture_here)()
    text = render(plan(captured), captured)
    validate(text, captured.local_ports)
    (out or sys.stdout).write(text)
    return 0

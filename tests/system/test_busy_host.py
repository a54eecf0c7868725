"""The census and attribution on a busy host, checked against the kernel's own view (issue 15).

A sandbox loaded as the benchmark's big host, at a smaller scale (bighost.SMALL: 40 services
of 2 workers, 121 listeners, 4,000 ESTABLISHED and some 1,500 TIME-WAIT sockets) with its
1,000-unit registry, and a squatter on one filler claim. `ss` in the same network namespace
is the oracle, never the old code: each claim's audit row must say what `ss` says of its
ports, and a range claim's holders must be the units `ss --cgroup` finds in the range.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.system import bighost
from tests.system.guarded import portguard
from tests.system.sandbox import Sandbox

SQUATTED = bighost.FILLER_PORT  # fill-000.service's first claim
RANGE = (10000, 60000)
CHURNS = [f"churn-{port}.service" for port in bighost.CHURN_PORTS]


@pytest.fixture(scope="module")
def host() -> Iterator[bighost.BigHost]:
    with bighost.big_host(load=bighost.SMALL) as busy:
        bighost.squat(busy, SQUATTED)
        yield busy


def kernel_sockets(sandbox: Sandbox) -> list[tuple[str, int, str]]:
    """(state, local port, unit) of every TCP socket but TIME-WAIT, from `ss --cgroup`."""
    out = sandbox.run("ss", "-Htan", "--cgroup", "state", "all", "exclude", "time-wait",
                      timeout=60).stdout  # fmt: skip
    found = []
    for line in out.splitlines():
        fields = line.split()
        port = int(fields[3].rpartition(":")[2])
        cgroup = re.search(r"cgroup:(\S+)", line)
        unit = cgroup.group(1).rstrip("/").rpartition("/")[2] if cgroup else ""
        found.append((fields[0], port, unit))
    return found


def test_every_claim_of_a_1000_unit_audit_says_what_the_kernel_says(
    host: bighost.BigHost,
) -> None:
    audit = portguard(host.sandbox, "audit", "--format", "json", "--registry", host.registry,
                      timeout=300)  # fmt: skip
    assert audit.returncode == 1, audit.stderr  # the squatter is drift
    data = json.loads(audit.stdout)
    # systemd answered for all 1,000 units, each with its unit file on disk (issue 29: it
    # once took 4,000 D-Bus calls, past audit's 2 s for them, and every state was lost).
    assert data["gaps"] == [], data["gaps"]
    rows = data["claims"]
    assert len(rows) == bighost.CLAIMS
    listening: dict[int, set[str]] = {}
    for state, port, unit in kernel_sockets(host.sandbox):
        if state == "LISTEN":
            listening.setdefault(port, set()).add(unit)
    for row in rows:
        port = int(row["claim"].split("/")[0].rpartition(":")[2])
        holders = listening.get(port, set())
        if not holders:
            assert row["status"] == "idle", row
        elif holders == {row["unit"]}:
            assert row["status"] == "ok", row
        else:
            assert row["status"] == "squatted", row
            assert {h["unit"] for h in row["holders"]} == holders - {row["unit"]}, row
    squatted = [row for row in rows if row["status"] == "squatted"]
    assert [r["unit"] for r in squatted] == ["fill-000.service"], squatted
    listeners = sum(len(ports) for ports in host.service_ports) + len(bighost.CHURN_PORTS)
    assert sum(row["status"] == "ok" for row in rows) == listeners


def test_a_range_claim_is_held_by_exactly_the_units_the_kernel_shows_in_it(
    host: bighost.BigHost,
) -> None:
    ranged = f"{bighost.DIR}/ranged"
    host.sandbox.run("mkdir", "-p", ranged)
    host.sandbox.write_file(f"{ranged}/registry.yaml", "version: 1\nunits:\n  range.service:\n"
                            f"    listen: [{RANGE[0]}-{RANGE[1]}/tcp]\n")  # fmt: skip
    audit = portguard(host.sandbox, "audit", "--format", "json", "--registry", ranged,
                      timeout=300)  # fmt: skip
    assert audit.returncode == 1, audit.stderr
    (row,) = json.loads(audit.stdout)["claims"]
    assert row["status"] == "squatted", row
    # The churn's client sockets live for microseconds: in one view or the other by chance.
    found = {h["unit"] for h in row["holders"]} - set(CHURNS)
    # The kernel's: who listens in the range, and who holds a port in it no listener has
    # (a client connection given a port of the range); accepted connections are their
    # listener's.
    sockets = [s for s in kernel_sockets(host.sandbox) if RANGE[0] <= s[1] <= RANGE[1]]
    listened = {port for state, port, _ in sockets if state == "LISTEN"}
    expected = {unit for state, port, unit in sockets
                if state == "LISTEN" or port not in listened} - set(CHURNS)  # fmt: skip
    assert found == expected
    assert {f"clients-{i}.service" for i in range(bighost.CLIENTS)} <= found

    check = portguard(host.sandbox, "check", "--registry", ranged, "range.service",
                      "--json", timeout=300)  # fmt: skip
    assert check.returncode == 69, check.stdout + check.stderr

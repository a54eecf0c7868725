"""audit's core without a kernel: the judgement per claim, the gathering through fake
sources, and the text, JSON and Prometheus renderings."""

import errno
import ipaddress
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import portguard.commands.audit
from portguard.commands.audit import render_text, run, summary_line
from portguard.commands.exposition import audit_families, render_audit
from portguard.errors import CannotWrite
from portguard.errors import Unavailable as CensusFailed
from portguard.host.occupants import Occupant
from portguard.host.units import FactsUnavailable, UnitFacts
from portguard.policy.audit import (
    Audit,
    FactsQuery,
    Row,
    Sources,
    Status,
    classify,
    gather,
    units_to_ask,
)
from portguard.policy.owners import Attribution, Holding, Owner, OwnerKind
from portguard.policy.redirects import Judged
from portguard.registry.assignments import Assignment, assignments
from portguard.registry.claims import Claim, Proto
from portguard.registry.entries import Registry
from portguard.registry.localports import LocalPorts, PortSet
from tests.conftest import Registry as RegistryFiles
from tests.prometheus_text import parse

REGISTRY = """\
version: 1
units:
  web.service:
    listen: [8080/tcp]
    owner: web-team
  api.service:
    listen: ["127.0.0.1:9090/tcp"]
  dns.service:
    listen: [5353/udp]
  batch.service:
    listen: [9000-9002/tcp]
  nginx.service:
    listen: [80/tcp]
    via: [nginx.socket]
  redis@.service:
    listen: ["%i/tcp"]
"""

SQUATTER = Owner(OwnerKind.SERVICE, "squatter.service", 42, "python3", "root")
WEB = Owner(OwnerKind.SERVICE, "web.service", 7, "web", "www-data")
NGINX_SOCKET = Owner(OwnerKind.SOCKET, "nginx.socket", 1, "systemd", activates=("nginx.service",))


def occupant(
    port: int, address: str = "0.0.0.0", *, proto: Proto = Proto.TCP, state: str = "",
    v6only: bool = False,
) -> Occupant:  # fmt: skip
    state = state or ("LISTEN" if proto is Proto.TCP else "UNCONN")
    time_wait = state == "TIME-WAIT"
    return Occupant(proto, state, ipaddress.ip_address(address), port, None,
                    0 if time_wait else 1000 + port, 0, None if time_wait else 5,
                    v6only, 30_000 if time_wait else None)  # fmt: skip


def held(owner: Owner, port: int, address: str = "0.0.0.0", **kwargs: object) -> Holding:
    return Holding(occupant(port, address, **kwargs), owner)  # type: ignore[arg-type]


def facts(*active: str, inactive: Sequence[str] = ()) -> dict[str, UnitFacts]:
    found = {u: UnitFacts(u, "active", "running") for u in active}
    found.update({u: UnitFacts(u, "inactive", "dead") for u in inactive})
    return found


@pytest.fixture
def registry(reg: RegistryFiles) -> Registry:
    reg.write("registry.yaml", REGISTRY)
    loaded = reg.load("registry.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.registry


def claims_of(registry: Registry, *instances: str) -> list[Assignment]:
    return list(assignments(registry, instances))


def status_by_unit(rows: Sequence[Row]) -> dict[str, Status]:
    return {row.assignment.unit: row.status for row in rows}


# --- classify ---------------------------------------------------------------------------------


def test_the_four_statuses_most_important_first(registry: Registry) -> None:
    holdings = [held(WEB, 8080), held(SQUATTER, 9090, "127.0.0.1")]
    rows = classify(claims_of(registry), holdings, facts("dns.service", inactive=["batch.service"]))

    assert [(r.assignment.unit, r.status) for r in rows] == [
        ("api.service", Status.SQUATTED),
        ("dns.service", Status.MISSING),
        ("web.service", Status.OK),
        ("batch.service", Status.IDLE),
        ("nginx.service", Status.IDLE),
    ]
    assert rows[0].holders == (SQUATTER,)
    assert rows[2].holders == (WEB,)
    assert rows[1].holders == rows[3].holders == ()


def test_a_via_socket_unit_or_service_holds_for_the_unit(registry: Registry) -> None:
    nginx = [a for a in claims_of(registry) if a.unit == "nginx.service"]
    assert classify(nginx, [held(NGINX_SOCKET, 80, "::")], {})[0].status is Status.OK
    other_socket = Owner(OwnerKind.SOCKET, "legacy.socket", 1, "systemd")
    row = classify(nginx, [held(other_socket, 80, "::")], {})[0]
    assert (row.status, row.holders) == (Status.SQUATTED, (other_socket,))


def test_a_foreign_owner_beside_the_unit_still_squats(registry: Registry) -> None:
    web = [a for a in claims_of(registry) if a.unit == "web.service"]
    holdings = [held(WEB, 8080, "0.0.0.0"), held(SQUATTER, 8080, "::1"), held(WEB, 8080, "::")]
    row = classify(web, holdings, {})[0]
    assert (row.status, row.holders) == (Status.SQUATTED, (SQUATTER,))


@pytest.mark.parametrize(
    ("holder_address", "v6only", "squatted"),
    [
        ("127.0.0.1", False, True),  # the claim's own address
        ("0.0.0.0", False, True),  # the wildcard covers it
        ("127.0.0.2", False, False),  # another address
        ("::", False, True),  # dual-stack [::] takes IPv4 too
        ("::", True, False),  # a v6only one does not
        ("::1", False, False),  # another family
    ],
)
def test_address_reach_follows_the_kernel(
    registry: Registry, holder_address: str, v6only: bool, squatted: bool
) -> None:
    api = [a for a in claims_of(registry) if a.unit == "api.service"]
    holding = held(SQUATTER, 9090, holder_address, v6only=v6only)
    row = classify(api, [holding], facts("api.service"))[0]
    assert row.status is (Status.SQUATTED if squatted else Status.MISSING)


def test_protocols_and_ranges(registry: Registry) -> None:
    chosen = [a for a in claims_of(registry) if a.unit in ("dns.service", "batch.service")]
    tcp_on_udp_port = held(SQUATTER, 5353)
    in_range = held(SQUATTER, 9002)
    rows = classify(chosen, [tcp_on_udp_port, in_range], {})
    assert status_by_unit(rows) == {"batch.service": Status.SQUATTED, "dns.service": Status.IDLE}


def test_time_wait_is_nobody(registry: Registry) -> None:
    web = [a for a in claims_of(registry) if a.unit == "web.service"]
    leftover = Holding(occupant(8080, state="TIME-WAIT"), Owner(OwnerKind.TIME_WAIT))
    assert classify(web, [leftover], facts("web.service"))[0].status is Status.MISSING


def test_missing_when_only_a_via_unit_is_active(registry: Registry) -> None:
    nginx = [a for a in claims_of(registry) if a.unit == "nginx.service"]
    known = facts("nginx.socket", inactive=["nginx.service"])
    assert classify(nginx, [], known)[0].status is Status.MISSING


def test_reloading_counts_as_active(registry: Registry) -> None:
    web = [a for a in claims_of(registry) if a.unit == "web.service"]
    known = {"web.service": UnitFacts("web.service", "reloading", "reload")}
    assert classify(web, [], known)[0].status is Status.MISSING


def test_unknown_states_make_a_free_port_idle_never_missing(registry: Registry) -> None:
    rows = classify(claims_of(registry), [held(WEB, 8080)], None)
    assert {r.status for r in rows} == {Status.OK, Status.IDLE}


def test_template_instances_are_claims_of_their_own(registry: Registry) -> None:
    claims = claims_of(registry, "redis@6379.service", "redis@6380.service", "redis@x.service")
    redis = [a for a in claims if a.unit.startswith("redis@")]
    assert [(a.unit, str(a.claim)) for a in redis] == [
        ("redis@6379.service", "6379/tcp"),
        ("redis@6380.service", "6380/tcp"),
    ]
    own = Owner(OwnerKind.SERVICE, "redis@6379.service", 9, "redis-server")
    rows = classify(redis, [held(own, 6379), held(own, 6380)], {})
    assert status_by_unit(rows) == {
        "redis@6380.service": Status.SQUATTED,  # one instance on the other's port
        "redis@6379.service": Status.OK,
    }


def test_units_to_ask(registry: Registry) -> None:
    names, patterns = units_to_ask(registry)
    assert names == ["web.service", "api.service", "dns.service", "batch.service",
                     "nginx.service", "nginx.socket"]  # fmt: skip
    assert patterns == ["redis@*.service"]


# --- gather, through fake sources -------------------------------------------------------------


@dataclass
class Fakes:
    """The outside world: who holds which (proto, port), what systemd says; calls recorded."""

    holdings: list[Holding] = field(default_factory=list)
    known: dict[str, UnitFacts] | None = field(default_factory=dict)
    fail_census: bool = False
    facts_calls: list[tuple[list[str], list[str]]] = field(default_factory=list)
    census_calls: list[set[tuple[Proto, int]]] = field(default_factory=list)

    def facts(
        self, names: Sequence[str], *, timeout: float, patterns: Sequence[str] = ()
    ) -> dict[str, UnitFacts]:
        self.facts_calls.append((list(names), list(patterns)))
        if self.known is None:
            raise FactsUnavailable("systemd did not answer over D-Bus within 2s")
        found = {n: f for n, f in self.known.items() if n in names}
        for pattern in patterns:
            head = pattern.partition("*")[0]
            found.update({n: f for n, f in self.known.items() if n.startswith(head)})
        return found

    def census(self, ports: set[tuple[Proto, int]]) -> list[Occupant]:
        if self.fail_census:
            raise PermissionError(1, "Operation not permitted")
        self.census_calls.append(ports)
        return [h.occupant for h in self.holdings if (h.occupant.proto, h.occupant.port) in ports]

    def listeners(self) -> list[Occupant]:
        return [h.occupant for h in self.holdings if h.occupant.state in ("LISTEN", "UNCONN")]

    def attribute(self, occupants: list[Occupant], query: FactsQuery) -> Attribution:
        owners = {h.occupant: h.owner for h in self.holdings}
        units = sorted({o.unit for o in owners.values() if o.unit})
        query(units, timeout=2.0)  # as attribute() asks: the owners' units
        return Attribution(tuple(Holding(o, owners[o]) for o in occupants), ("a gap",))

    def sources(self) -> Sources:
        ports = LocalPorts((32768, 60999), PortSet())
        return Sources(self.facts, self.census, self.listeners, self.attribute,
                       lambda: ports, lambda: 1700000000.5)  # fmt: skip


def test_gather_asks_systemd_once_and_census_every_claimed_port(registry: Registry) -> None:
    fakes = Fakes(
        holdings=[held(WEB, 8080), held(SQUATTER, 6379)],
        known=facts("web.service", "redis@6379.service", inactive=["redis@6380.service"]),
    )
    audit = gather(registry, fakes.sources(), unregistered=False)

    names, patterns = units_to_ask(registry)
    # Once for the states and instances; attribution then asks only about the one owner
    # systemd was not asked about yet.
    assert fakes.facts_calls == [(names, patterns), (["squatter.service"], [])]
    assert fakes.census_calls == [{
        (Proto.TCP, 8080), (Proto.TCP, 9090), (Proto.UDP, 5353), (Proto.TCP, 9000),
        (Proto.TCP, 9001), (Proto.TCP, 9002), (Proto.TCP, 80), (Proto.TCP, 6379),
        (Proto.TCP, 6380),
    }]  # fmt: skip
    assert [(r.assignment.unit, r.status) for r in audit.rows] == [
        ("redis@6379.service", Status.SQUATTED),
        ("web.service", Status.OK),
        ("api.service", Status.IDLE),
        ("dns.service", Status.IDLE),
        ("batch.service", Status.IDLE),
        ("nginx.service", Status.IDLE),
        ("redis@6380.service", Status.IDLE),
    ]
    assert audit.unregistered is None
    assert audit.gaps == ("a gap",)
    assert audit.timestamp == 1700000000.5
    assert audit.exit_code == 1


def test_a_silent_systemd_is_said_once_and_not_asked_again(registry: Registry) -> None:
    fakes = Fakes(holdings=[held(WEB, 8080)], known=None)
    audit = gather(registry, fakes.sources(), unregistered=False)

    assert len(fakes.facts_calls) == 1
    assert len(audit.gaps) == 2
    assert audit.gaps[0].startswith("systemd did not answer over D-Bus within 2s; unit states")
    assert "idle, never missing" in audit.gaps[0]
    assert {r.status for r in audit.rows} == {Status.OK, Status.IDLE}
    assert audit.exit_code == 0


def test_an_unreadable_socket_table_is_an_error(registry: Registry) -> None:
    with pytest.raises(CensusFailed, match="socket table could not be read") as caught:
        gather(registry, Fakes(fail_census=True).sources(), unregistered=False)
    assert caught.value.exit_code == 69


def test_unregistered_listeners(registry: Registry) -> None:
    stray = Owner(OwnerKind.SERVICE, "stray.service", 50, "nc")
    resolver = Owner(OwnerKind.SERVICE, "resolved.service", 51, "resolved")
    fakes = Fakes(
        holdings=[
            held(WEB, 8080),  # claimed
            held(stray, 7777, "::"),
            held(stray, 40000),  # TCP in the ephemeral range: still a listener
            held(resolver, 45000, proto=Proto.UDP),  # UDP there is a client socket
            held(resolver, 53, "127.0.0.53", proto=Proto.UDP),
            held(stray, 8081, state="ESTAB"),  # not a listener
        ]
    )
    audit = gather(registry, fakes.sources(), unregistered=True)

    assert audit.unregistered is not None
    assert [(str(s.occupant), s.owner.unit) for s in audit.unregistered] == [
        ("[::]:7777/tcp", "stray.service"),
        ("0.0.0.0:40000/tcp", "stray.service"),
        ("127.0.0.53:53/udp", "resolved.service"),
    ]
    assert audit.exit_code == 0  # strays never change it


# --- renderings ----------------------------------------------------------------------------------


def sample_audit(registry: Registry, *, unregistered: bool = True) -> Audit:
    odd = Owner(OwnerKind.UNKNOWN, user="bob", cgroup='/odd "dir"\\x\nnext', pid=77, comm="a\nb")
    fakes = Fakes(
        holdings=[held(WEB, 8080), held(odd, 9090, "127.0.0.1"), held(SQUATTER, 7777)],
        known=facts("dns.service"),
    )
    return gather(registry, fakes.sources(), unregistered=unregistered)


def test_text_is_an_aligned_table_and_a_summary(registry: Registry) -> None:
    text = render_text(sample_audit(registry))
    lines = text.splitlines()

    assert lines[0].split() == ["STATUS", "UNIT", "CLAIM", "HOLDER"]
    assert lines[1].startswith("squatted      api.service    127.0.0.1:9090/tcp  an unidentified")
    assert "pid 77 a?b" in lines[1]  # a newline in a process name stays inside its row
    assert lines[2].split() == ["missing", "dns.service", "5353/udp", "-"]
    assert lines[3].split()[:3] == ["ok", "web.service", "8080/tcp"]
    assert lines[3].endswith("web.service (pid 7 web)")
    assert [line.split()[:2] for line in lines[4:6]] == [
        ["idle", "batch.service"], ["idle", "nginx.service"]
    ]  # fmt: skip
    assert lines[6].split()[:3] == ["unregistered", "-", "0.0.0.0:7777/tcp"]
    assert lines[6].endswith("squatter.service (pid 42 python3)")
    column = lines[0].index("CLAIM")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[1:7])
    assert (
        lines[7] == "5 claims: 1 ok, 1 squatted, 1 missing, 2 idle, 0 redirected, 0 exhausted; "
        "1 unregistered listener"
    )
    assert len(lines) == 8


def test_summary_says_claim_once(registry: Registry) -> None:
    audit = Audit((classify(claims_of(registry)[:1], [], None)), None, (), 0.0)
    assert (
        summary_line(audit)
        == "1 claim: 0 ok, 0 squatted, 0 missing, 1 idle, 0 redirected, 0 exhausted"
    )


def test_json(registry: Registry) -> None:
    data = json.loads(portguard.commands.audit.render(sample_audit(registry), "json"))

    assert set(data) == {"claims", "unregistered", "summary", "gaps", "timestamp"}
    squatted = data["claims"][0]
    assert squatted == {
        "unit": "api.service", "claim": "127.0.0.1:9090/tcp", "proto": "tcp", "port": 9090,
        "last_port": 9090, "address": "127.0.0.1", "status": "squatted", "team": None,
        "holders": [{
            "kind": "unknown", "unit": None, "pid": 77, "comm": "a\nb", "user": "bob",
            "container": None, "container_name": None, "cgroup": '/odd "dir"\\x\nnext',
            "description": 'an unidentified process in cgroup /odd "dir"\\x\nnext (pid 77 a\nb)',
        }],
        "redirect": None,
        "pool": None,
    }  # fmt: skip
    web = next(c for c in data["claims"] if c["unit"] == "web.service")
    assert (web["status"], web["team"], web["address"]) == ("ok", "web-team", None)
    assert web["holders"][0]["description"] == "web.service (pid 7 web)"
    batch = next(c for c in data["claims"] if c["unit"] == "batch.service")
    assert (batch["port"], batch["last_port"], batch["holders"]) == (9000, 9002, [])
    assert data["unregistered"][0]["holder"]["unit"] == "squatter.service"
    assert data["unregistered"][0]["state"] == "LISTEN"
    assert data["summary"] == {"claims": 5, "ok": 1, "squatted": 1, "missing": 1, "idle": 2,
                               "redirected": 0, "exhausted": 0, "unregistered": 1}  # fmt: skip
    assert data["gaps"] == ["a gap"]


def test_json_without_unregistered_says_null(registry: Registry) -> None:
    data = json.loads(
        portguard.commands.audit.render(sample_audit(registry, unregistered=False), "json")
    )
    assert data["unregistered"] is None
    assert "unregistered" not in data["summary"]


def test_prometheus_passes_the_strict_parser_with_every_label_escaped(registry: Registry) -> None:
    text = render_audit(sample_audit(registry))
    families = parse(text)

    assert list(families) == ["portguard_claim", "portguard_claims",
                              "portguard_unregistered_listener", "portguard_audit_gaps",
                              "portguard_audit_timestamp_seconds"]  # fmt: skip
    assert all(f.type == "gauge" and f.help for f in families.values())
    claim = families["portguard_claim"]
    assert len(claim.samples) == 5
    squatted = claim.series(
        "portguard_claim", unit="api.service", port="9090", proto="tcp", address="127.0.0.1",
        team="", status="squatted",
        # Without the PID and process name, which would start a new series at each restart.
        holder='an unidentified process in cgroup /odd "dir"\\x\nnext',
    )  # fmt: skip
    assert squatted.value == 1
    web = {"unit": "web.service", "port": "8080", "team": "web-team", "status": "ok"}
    assert claim.series("portguard_claim", **web, proto="tcp", address="*", holder="").value == 1
    batch = {"unit": "batch.service", "port": "9000-9002", "team": "", "status": "idle"}
    assert claim.series("portguard_claim", **batch, proto="tcp", address="*", holder="").value == 1
    counts = families["portguard_claims"]
    assert {s.labels["status"]: s.value for s in counts.samples} == {
        "ok": 1, "squatted": 1, "missing": 1, "idle": 2, "redirected": 0, "exhausted": 0
    }  # fmt: skip
    stray = families["portguard_unregistered_listener"].samples
    assert [(s.labels, s.value) for s in stray] == [
        ({"port": "7777", "proto": "tcp", "address": "0.0.0.0", "holder": "squatter.service"}, 1)
    ]
    assert families["portguard_audit_gaps"].samples[0].value == 1
    assert families["portguard_audit_timestamp_seconds"].samples[0].value == 1700000000.5
    assert '\\"dir\\"\\\\x\\nnext' in text  # escaped as the format says, not dropped


def test_prometheus_every_status_count_is_present_and_claims_are_one_series_each(
    reg: RegistryFiles,
) -> None:
    reg.write("registry.yaml", "version: 1\nunits:\n  a.service:\n    listen: [8080, 8080]\n")
    loaded = reg.load("registry.yaml")
    audit = gather(loaded.registry, Fakes().sources(), unregistered=False)
    assert len(audit.rows) == 2  # a unit listing a claim twice (lint warns)

    families = parse(render_audit(audit))
    assert len(families["portguard_claim"].samples) == 1
    counts = {s.labels["status"]: s.value for s in families["portguard_claims"].samples}
    assert counts == {
        "ok": 0,
        "squatted": 0,
        "missing": 0,
        "idle": 2,
        "redirected": 0,
        "exhausted": 0,
    }
    assert "portguard_unregistered_listener" not in families


def test_prometheus_families_without_claims(reg: RegistryFiles) -> None:
    reg.write("registry.yaml", "version: 1\nunits: {}\n")
    audit = gather(reg.load("registry.yaml").registry, Fakes().sources(), unregistered=True)
    names = [f.name for f in audit_families(audit)]
    assert names == ["portguard_claims", "portguard_audit_gaps",
                     "portguard_audit_timestamp_seconds"]  # fmt: skip
    parse(render_audit(audit))


# --- run ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["text", "json", "prometheus"])
def test_run_prints_the_rendering_and_returns_the_exit_code(
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    output: str,
) -> None:
    monkeypatch.setattr(portguard.commands.audit, "load", lambda path: registry)
    fakes = Fakes(holdings=[held(WEB, 8080)], known=None)

    code = run(Path("/etc/portguard"), output=output, unregistered=False, sources=fakes.sources())

    out, err = capsys.readouterr()
    assert code == 0
    if output == "json":
        assert err == ""
        assert len(json.loads(out)["gaps"]) == 2
    else:
        # The gaps once each on stderr; stdout stays the table or the metrics.
        assert err.count("portguard: not found out: ") == 2
        assert err.count("systemd did not answer") == 1
    if output == "prometheus":
        parse(out)
    if output == "text":
        assert (
            out.splitlines()[-1]
            == "5 claims: 1 ok, 0 squatted, 0 missing, 4 idle, 0 redirected, 0 exhausted"
        )


def test_run_with_drift_returns_1(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(portguard.commands.audit, "load", lambda path: registry)
    fakes = Fakes(known=facts("web.service"))
    assert run(None, output="text", unregistered=False, sources=fakes.sources()) == 1
    assert "missing" in capsys.readouterr().out


# --- --output: the file node_exporter's textfile collector reads --------------------------------


@pytest.fixture
def textfile_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "textfile"
    directory.mkdir()
    return directory


def run_to(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, destination: Path, fakes: Fakes
) -> int:
    monkeypatch.setattr(portguard.commands.audit, "load", lambda path: registry)
    return run(None, output="prometheus", unregistered=False, destination=destination,
               sources=fakes.sources())  # fmt: skip


@pytest.mark.parametrize(
    ("fakes", "expected"),
    [
        (Fakes(holdings=[held(WEB, 8080)]), 0),
        (Fakes(holdings=[held(SQUATTER, 8080)]), 1),  # drift: the file is written all the same
    ],
)
def test_output_replaces_the_file_by_a_rename_after_a_sync(
    registry: Registry,
    *,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    textfile_dir: Path,
    fakes: Fakes,
    expected: int,
) -> None:
    target = textfile_dir / "portguard.prom"
    target.write_text("# the previous run's metrics\n")
    target.chmod(0o600)
    expected_text = render_audit(gather(registry, fakes.sources(), unregistered=False))
    synced: list[str] = []
    renames: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(source: str, destination: str) -> None:
        # The moment before the rename: a reader still gets the whole old file, and the new
        # one is complete, synced and readable by node_exporter's user beside it.
        assert target.read_text() == "# the previous run's metrics\n"
        temporary = Path(source)
        assert temporary.parent == textfile_dir
        assert not temporary.name.endswith(".prom")  # the collector reads *.prom only
        assert temporary.read_text() == expected_text
        assert temporary.stat().st_mode & 0o777 == 0o644
        assert str(temporary) in synced
        renames.append((str(source), str(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    previous = os.umask(0o077)  # the file is 0644 whatever the umask
    try:
        code = run_to(registry, monkeypatch, target, fakes)
    finally:
        os.umask(previous)

    assert code == expected
    assert len(renames) == 1 and renames[0][1] == str(target)
    assert target.read_text() == expected_text
    parse(target.read_text())
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["portguard.prom"]
    assert str(textfile_dir) in synced  # the rename itself is made durable
    out, err = capsys.readouterr()
    assert out == ""  # the rendering went to the file only
    assert err.count("portguard: not found out: a gap") == 1


def test_output_any_format_and_a_new_file(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, textfile_dir: Path
) -> None:
    target = textfile_dir / "audit.json"
    monkeypatch.setattr(portguard.commands.audit, "load", lambda path: registry)
    fakes = Fakes(holdings=[held(WEB, 8080)])
    assert run(None, output="json", unregistered=False, destination=target,
               sources=fakes.sources()) == 0  # fmt: skip
    assert json.loads(target.read_text())["summary"]["ok"] == 1


def test_a_reader_sees_the_old_file_or_the_new_one_never_a_part(textfile_dir: Path) -> None:
    target = textfile_dir / "portguard.prom"
    # Large enough that a write in place would be seen half done.
    versions = ["".join(f"metric_{letter}{{n=\"{i}\"}} {i}\n" for i in range(20_000))
                for letter in "ab"]  # fmt: skip
    portguard.commands.audit.write_metrics(target, versions[0])
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            portguard.commands.audit.write_metrics(target, versions[i % 2])
    finally:
        stop.set()
        reader.join()
    assert seen <= set(versions), [len(s) for s in seen - set(versions)]
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["portguard.prom"]


def test_output_into_a_missing_directory_is_cantcreat(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "no-node-exporter" / "portguard.prom"
    with pytest.raises(CannotWrite) as caught:
        run_to(registry, monkeypatch, target, Fakes())
    assert caught.value.exit_code == 73
    assert caught.value.message == (
        f"cannot write {target}: directory {target.parent} does not exist"
    )
    assert not target.parent.exists()


def test_output_under_a_file_is_cantcreat(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, textfile_dir: Path
) -> None:
    (textfile_dir / "plain").write_text("")
    target = textfile_dir / "plain" / "portguard.prom"
    with pytest.raises(CannotWrite, match=f"^cannot write {target}: Not a directory$"):
        run_to(registry, monkeypatch, target, Fakes())


def test_a_failed_rename_leaves_no_temporary_file(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, textfile_dir: Path
) -> None:
    target = textfile_dir / "portguard.prom"
    target.mkdir()  # rename(2) will not put a file over a directory
    with pytest.raises(CannotWrite, match=f"^cannot write {target}: Is a directory$") as caught:
        run_to(registry, monkeypatch, target, Fakes())
    assert caught.value.exit_code == 73
    assert [p.name for p in textfile_dir.iterdir()] == ["portguard.prom"]
    assert target.is_dir()


def test_a_full_disk_keeps_the_old_file(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, textfile_dir: Path
) -> None:
    target = textfile_dir / "portguard.prom"
    target.write_text("old\n")

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CannotWrite, match=f"^cannot write {target}: No space left on device$"):
        run_to(registry, monkeypatch, target, Fakes())
    assert target.read_text() == "old\n"
    assert [p.name for p in textfile_dir.iterdir()] == ["portguard.prom"]


def test_a_free_claim_whose_traffic_nat_takes_is_redirected(registry: Registry) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from portguard.policy.redirects import judge  # noqa: PLC0415
    from tests.policy import nat_rules as n  # noqa: PLC0415

    rules = n.ruleset(
        {
            "pre": [
                n.dport(9000) + n.redirect(9001),
                n.dport(80) + n.dnat(n.POD, 80),
                n.saddr_in(b"\x0a\0\0\0", 8) + n.dport(6380) + n.dnat(n.POD, 1),
            ]
        }
    )
    asked: list[tuple[str, frozenset[tuple[Proto, int]]]] = []

    def traffic(unit: str, claim: Claim, own: frozenset[tuple[Proto, int]]) -> Judged:
        asked.append((unit, own))
        return judge(rules, [claim], n.HERE, unit=unit, own=own)

    fakes = Fakes(holdings=[held(WEB, 8080), held(SQUATTER, 6379)],
                  known=facts("web.service", "redis@6379.service",
                              inactive=["redis@6380.service"]))  # fmt: skip
    audit = gather(registry, replace(fakes.sources(), traffic=traffic), unregistered=False)

    status = {r.assignment.unit: (r.status, r.taker and r.taker.to) for r in audit.rows}
    # batch's 9000 goes to its own 9001 (its plumbing); nginx's 80 to a pod: redirected.
    assert status["batch.service"] == (Status.IDLE, None)
    assert status["nginx.service"] == (Status.REDIRECTED, "10.244.1.5:80")
    assert status["redis@6380.service"] == (Status.IDLE, "10.244.1.5:1")  # some: named, not drift
    assert status["web.service"] == (Status.OK, None)  # a held claim is never asked
    assert all(unit != "web.service" for unit, _ in asked)
    assert audit.rows[1].status is Status.REDIRECTED  # after squatted, before missing
    assert audit.exit_code == 1
    data = json.loads(portguard.commands.audit.render(audit, "json"))
    nginx = next(c for c in data["claims"] if c["unit"] == "nginx.service")
    assert nginx["redirect"]["certain"] is True and nginx["redirect"]["owner_kind"] == "nat-rule"
    metrics = portguard.commands.audit.render(audit, "prometheus")
    assert 'status="redirected",holder="an nftables rule in table ip t chain pre' in metrics

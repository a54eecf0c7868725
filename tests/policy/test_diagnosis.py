"""`why`'s judgement without a kernel: the query, the order of occupants, the fix (diagnosis.py),
and how it reads (whytext.py)."""

import ipaddress
import json

import pytest

from portguard.cli.values import query as parse_query
from portguard.commands.whytext import as_data, headline, render
from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.processes import Process
from portguard.host.sessions import Session
from portguard.host.units import UnitFacts
from portguard.policy.diagnosis import (
    Elsewhere,
    Occupancy,
    Query,
    TimeWait,
    diagnose,
    elsewhere_lines,
    group,
    is_registered,
)
from portguard.policy.owners import Holding, Owner, OwnerKind
from portguard.registry.assignments import Assignment, assigned
from portguard.registry.claims import Claim, Proto
from tests.conftest import Registry
from tests.policy.test_report import OWNERS, SIGNALLING

WEB = Owner(OwnerKind.SERVICE, "web.service", 812, "python3", "root", pids=(812,))
API = Owner(OwnerKind.SERVICE, "api.service", 900, "api", "root")
REGISTRY = """\
    version: 1
    units:
      api.service:
        listen: [8080/tcp]
        owner: payments-team
        via: [api.socket]
    """


def sock(state: str = "LISTEN", address: str = "0.0.0.0", *, proto: Proto = Proto.TCP,
         port: int = 8080, expires_ms: int | None = None) -> Occupant:  # fmt: skip
    return Occupant(proto, state, ipaddress.ip_address(address), port, None, 1, 0, 7,
                    v6only=False, expires_ms=expires_ms)  # fmt: skip


def registered(reg: Registry, query: Query) -> list[Assignment]:
    reg.write("registry.yaml", REGISTRY)
    registry = reg.load("registry.yaml").registry
    return [a for claim in query.claims() for a in assigned(registry, claim)]


# --- the query ------------------------------------------------------------------------------


# --- grouping, order and fixes ----------------------------------------------------------------


def test_group_puts_sockets_under_their_owner_and_counts_time_wait_apart() -> None:
    waits = [sock("TIME-WAIT", expires_ms=ms) for ms in (1200, 41_001, 300)]
    holdings = [Holding(sock(), WEB), Holding(sock("ESTAB"), WEB),
                *(Holding(w, Owner(OwnerKind.TIME_WAIT)) for w in waits)]  # fmt: skip
    owners, time_wait = group(holdings)
    assert list(owners) == [WEB]
    assert [s.state for s in owners[WEB]] == ["LISTEN", "ESTAB"]
    assert time_wait == TimeWait(3, 41_001)
    assert time_wait.seconds_left == 42  # rounded up: it is not free after 41 s


def test_foreign_listener_comes_first_and_gets_the_registered_units_fix(reg: Registry) -> None:
    query = parse_query("8080/tcp")
    assignments = registered(reg, query)
    own = Occupancy(API, (sock("LISTEN", "127.0.0.1"),), registered=True)
    foreign = Occupancy(WEB, (sock(),))
    diagnosis = diagnose(query, [own, foreign], None, assignments)
    assert [o.owner for o in diagnosis.occupancies] == [WEB, API]
    [fix] = diagnosis.fixes
    assert "'systemctl stop web.service'" in fix
    assert diagnosis.exit_code is Exit.OCCUPIED


def test_registered_owner_needs_no_fix(reg: Registry) -> None:
    query = parse_query("8080/tcp")
    assignments = registered(reg, query)
    socket_unit = Owner(OwnerKind.SOCKET, "api.socket", 1, "systemd", activates=("api.service",))
    assert is_registered(socket_unit, assignments)  # via counts as the registered owner
    diagnosis = diagnose(query, [Occupancy(socket_unit, (sock(),), registered=True)], None,
                         assignments)  # fmt: skip
    assert diagnosis.fixes == ("nothing to fix: api.socket holds it, as the registry says",)
    assert headline(diagnosis) == (
        "8080/tcp is held by socket unit api.socket (held by PID 1, which starts api.service), "
        "its registered owner"
    )


def test_unregistered_socket_unit_is_stopped_with_its_service() -> None:
    owner = Owner(OwnerKind.SOCKET, "legacy.socket", 1, "systemd", activates=("legacy.service",))
    diagnosis = diagnose(parse_query("8081"), [Occupancy(owner, (sock(port=8081),))], None, [])
    [fix] = diagnosis.fixes
    assert fix.startswith("'systemctl stop legacy.socket legacy.service' and 'systemctl disable "
                          "legacy.socket' if nothing should listen on 8081/tcp")  # fmt: skip


@pytest.mark.parametrize("kind", [OwnerKind.SERVICE, OwnerKind.SOCKET])
def test_a_transient_owner_is_stopped_never_disabled(kind: OwnerKind) -> None:
    owner = Owner(kind, f"run-r1.{kind.value}", 7, "python3", transient=True)
    diagnosis = diagnose(parse_query("8081"), [Occupancy(owner, (sock(port=8081),))], None, [])
    [fix] = diagnosis.fixes
    assert fix.startswith(f"'systemctl stop run-r1.{kind.value}")
    assert "disable" not in fix.replace("nothing to disable", "")


def test_time_wait_alone_says_how_long_to_wait() -> None:
    diagnosis = diagnose(parse_query("8080/tcp"), [], TimeWait(2, 30_500), [])
    [fix] = diagnosis.fixes
    assert fix.startswith("wait 31 s, until the last TIME-WAIT ends; or let the service set "
                          "SO_REUSEADDR")  # fmt: skip
    assert diagnosis.occupied
    assert headline(diagnosis) == (
        "8080/tcp has 2 connections in TIME-WAIT, the last ends in 31 s — not in the registry"
    )


def test_free_port_is_not_occupied_and_points_at_other_namespaces() -> None:
    diagnosis = diagnose(parse_query("8080/tcp"), [], None, [])
    assert diagnosis.exit_code is Exit.OK
    assert diagnosis.fixes == ()
    text = render(diagnosis)
    assert text.startswith("8080/tcp is free in this network namespace — not in the registry\n")
    assert "portguard why 8080/tcp --netns NAME|PID" in text.replace("\n           ", " ")


@pytest.mark.parametrize("owner", [o for o in OWNERS if o.kind is not OwnerKind.TIME_WAIT],
                         ids=lambda o: f"{o.kind}-{o.unit}")  # fmt: skip
@pytest.mark.parametrize("with_registry", [True, False])
def test_no_fix_advises_a_signal(owner: Owner, with_registry: bool, reg: Registry) -> None:
    query = parse_query("8080/tcp")
    assignments = registered(reg, query) if with_registry else []
    diagnosis = diagnose(query, [Occupancy(owner, (sock(),))], TimeWait(1, 5000), assignments)
    assert diagnosis.fixes
    for fix in diagnosis.fixes:
        assert not SIGNALLING.search(fix), fix
    assert not SIGNALLING.search(render(diagnosis).replace("KillMode=", ""))


# --- the text --------------------------------------------------------------------------------


def test_text_shows_the_chain_aligned_and_most_important_first(reg: Registry) -> None:
    query = parse_query("8080")
    process = Process(812, "python3", ("/usr/bin/python3", "-m", "http.server", "8080"), 0, 1,
                      started=None)  # fmt: skip
    parent = Process(1, "systemd", ("/sbin/init",), 0, 0, None)
    facts = UnitFacts("web.service", "active", "running", 812, description="Web # frontend",
                      triggered_by=("web.socket",))  # fmt: skip
    occupancy = Occupancy(WEB, (sock(), sock("LISTEN", "::"), sock("ESTAB")), facts, process,
                          parent)  # fmt: skip
    text = render(diagnose(query, [occupancy], None, registered(reg, query)))
    lines = text.splitlines()
    assert lines[0] == (
        "8080 is held by web.service (pid 812 python3) — registered to api.service (payments-team)"
    )
    assert lines[2:7] == [
        "sockets    LISTEN 0.0.0.0:8080/tcp, LISTEN [::]:8080/tcp and 1 connection",
        "process    pid 812 /usr/bin/python3 -m http.server 8080",
        "           user root · parent 1 systemd",
        'unit       web.service "Web # frontend", active (running)',
        "           activated by web.socket",
    ]
    registry_row = next(line for line in lines if line.startswith("registry"))
    assert registry_row.startswith(
        "registry   8080/tcp → api.service (payments-team), via api.socket"
    )
    assert all(len(line) <= 100 for line in lines if not line.startswith("process"))


def test_session_and_container_rows() -> None:
    session_owner = Owner(OwnerKind.SESSION, "session-c3.scope", 412, "python3", "alice")
    session = Session("c3", "alice", "pts/1", None, "10.0.0.5", "sshd", 400)
    proxy = Process(4000, "docker-proxy", ("docker-proxy", "-container-ip", "172.17.0.2"), 0,
                    3000, None)  # fmt: skip
    container = Owner(OwnerKind.CONTAINER, "docker.service", 4000, "docker-proxy",
                      container="3f2a9c0b1d2e" + "0" * 52, container_name="web")  # fmt: skip
    text = render(diagnose(parse_query("8080/tcp"), [
        Occupancy(session_owner, (sock(),), session=session),
        Occupancy(container, (sock("LISTEN", "::"),), process=proxy,
                  forwards_to="172.17.0.2:80"),
    ], None, [])).replace("\n           ", " ")  # fmt: skip
    assert "session    c3 of alice on pts/1 (sshd from 10.0.0.5)" in text
    assert ("container  3f2a9c0b1d2e (web), published by docker-proxy in docker.service, "
            "forwards to 172.17.0.2:80") in text  # fmt: skip


def test_json_carries_the_same_facts(reg: Registry) -> None:
    query = parse_query("8080/tcp")
    process = Process(812, "python3", ("python3",), 0, 1, 1_700_000_000.5)
    diagnosis = diagnose(query, [Occupancy(WEB, (sock(),), process=process)],
                         TimeWait(1, 900), registered(reg, query), gaps=["bus silent"])  # fmt: skip
    data = json.loads(json.dumps(as_data(diagnosis)))
    assert data["headline"] == headline(diagnosis)
    assert data["occupied"] is True
    assert data["exit_code"] == 1
    assert data["protos"] == ["tcp"]
    [occupant] = data["occupants"]
    assert occupant["owner"]["unit"] == "web.service"
    assert occupant["owner"]["kind"] == "service"
    assert occupant["process"] == {"pid": 812, "comm": "python3", "cmdline": ["python3"],
                                   "uid": 0, "ppid": 1, "started": 1_700_000_000.5,
                                   "user": "root"}  # fmt: skip
    assert occupant["sockets"][0]["address"] == "0.0.0.0"
    assert data["time_wait"] == {"count": 1, "last_ms": 900, "seconds_left": 1}
    assert data["registry"][0]["unit"] == "api.service"
    assert data["registry"][0]["via"] == ["api.socket"]
    assert data["fixes"] == list(diagnosis.fixes)
    assert data["gaps"] == ["bus silent"]


def test_template_instance_is_the_registered_owner_of_its_port(reg: Registry) -> None:
    reg.write("registry.yaml", """\
        version: 1
        units:
          redis@.service:
            listen: ["%i/tcp"]
        """)  # fmt: skip
    registry = reg.load("registry.yaml").registry
    found = assigned(registry, Claim(Proto.TCP, 6379, 6379))
    assert [(a.unit, str(a.claim)) for a in found] == [("redis@6379.service", "6379/tcp")]
    owner = Owner(OwnerKind.SERVICE, "redis@6379.service", 5, "redis-server")
    assert is_registered(owner, found)


# --- bound elsewhere: free here, held in other network namespaces (issue 14) ------------------


def container_in_its_namespace(index: int) -> Elsewhere:
    owner = Owner(OwnerKind.CONTAINER, f"docker-{index:064x}.scope", 100 + index, "httpd",
                  "root", container=f"{index:064x}", container_name=f"web{index}",
                  runtime="docker")  # fmt: skip
    return Elsewhere(f"the namespace of pid {100 + index}", owner, (sock(),))


def test_free_here_but_bound_elsewhere_says_where_and_stays_free() -> None:
    nsl = Elsewhere("netns x", WEB, (sock(),))
    diagnosis = diagnose(parse_query("8080/tcp", None), [], None, [],
                         elsewhere=[nsl, container_in_its_namespace(1)])  # fmt: skip

    assert diagnosis.exit_code is Exit.OK
    assert headline(diagnosis) == (
        "8080/tcp is free here; held in netns x by web.service (pid 812 python3) and 1 more "
        "socket owner — not in the registry"
    )
    text = render(diagnosis)
    assert "elsewhere  netns x: web.service (pid 812 python3)\n" in text
    assert "           the namespace of pid 101: container 000000000000 (web1) via" in text
    assert "does not block a bind here" in " ".join(text.split())
    data = as_data(diagnosis)
    assert [e["namespace"] for e in data["elsewhere"]] == ["netns x", "the namespace of pid 101"]
    json.dumps(data)


def test_many_container_namespaces_are_one_line_and_many_namespaces_a_count() -> None:
    containers = [container_in_its_namespace(i) for i in range(1, 13)]
    assert elsewhere_lines(containers) == [
        "inside 12 container namespaces (web1, web2, web3, web4, web5 and 7 more)"
    ]
    services = [Elsewhere(f"netns n{i}", WEB, (sock(),)) for i in range(10)]
    lines = elsewhere_lines([*services, *containers])
    assert len(lines) == 8
    assert lines[0] == "netns n0: web.service (pid 812 python3)"
    assert lines[-1] == "and 4 more namespaces"  # 9 service lines and the containers' line


POOL_REGISTRY = """\
    version: 1
    units:
      coturn.service:
        listen: [3478/udp, {port: 49152-49200/udp, pool: true, min-free: 5}]
    """


def test_a_port_of_a_pool_says_whose_pool_it_is_and_that_no_start_is_blocked(
    reg: Registry,
) -> None:
    query = parse_query("49160/udp")
    reg.write("registry.yaml", POOL_REGISTRY)
    registry = reg.load("registry.yaml").registry
    assignments = [a for claim in query.claims() for a in assigned(registry, claim)]
    client = Occupancy(WEB, (sock("ESTAB", proto=Proto.UDP, port=49160),))
    pool = assignments[0].claim
    diagnosis = diagnose(query, [client], None, assignments, serving={pool: True})
    assert headline(diagnosis) == (
        "49160/udp is held by web.service (pid 812 python3) — registered to "
        "coturn.service as part of its pool 49152-49200/udp"
    )
    [fix] = diagnosis.fixes
    assert fix.startswith("nothing blocks a start: coturn.service's pool 49152-49200/udp is "
                          "bound on demand and can serve")  # fmt: skip
    assert "'systemctl stop web.service'" in fix
    # The same holder in a pool that cannot serve any more: that is the blocked start.
    [short] = diagnose(query, [client], None, assignments, serving={pool: False}).fixes
    assert short.startswith("coturn.service's pool 49152-49200/udp cannot serve: fewer than "
                            "min-free 5 of it can be bound")  # fmt: skip
    [unknown] = diagnose(query, [client], None, assignments).fixes  # not tried: said so
    assert "blocks a start only when fewer than min-free of the pool can be bound" in unknown
    assert "a pool (min-free 5)" in render(diagnosis)
    [data] = as_data(diagnosis)["registry"]
    assert data["pool"] == {"min_free": 5}
    assert diagnosis.exit_code is Exit.OCCUPIED  # a socket is there, as `why` always says

"""`portguard init`'s core: attributed listeners -> a registry that lint accepts.

Every generated text is read back with the registry loader and linted with lint's own
code, so the assertions are about what `check` and `audit` will read, not about layout.
"""

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portguard.commands import init as bootstrap
from portguard.commands.init import GeneratedRegistryInvalid, render, validate
from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.units import UnitFacts
from portguard.policy.inventory import Capture, plan
from portguard.policy.owners import Holding, Owner, OwnerKind
from portguard.registry.claims import Claim, Proto, overlaps, reach
from portguard.registry.entries import Mode, Registry, RegistrySource
from portguard.registry.findings import Finding, Severity
from portguard.registry.lint import check_registry
from portguard.registry.localports import LocalPorts, PortSet
from portguard.registry.model import load
from tests.conftest import DEFAULT_LOCAL_PORTS

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def sock(address: str, port: int, proto: str = "tcp", *, v6only: bool = False,
         peer: tuple[str, int] | None = None) -> Occupant:  # fmt: skip
    state = "LISTEN" if proto == "tcp" else "UNCONN"
    far = (ipaddress.ip_address(peer[0]), peer[1]) if peer else None
    return Occupant(Proto(proto), state, ipaddress.ip_address(address), port, far, inode=7,
                    uid=0, cgroup_id=9, v6only=v6only, expires_ms=None)  # fmt: skip


def service(name: str, pid: int = 100) -> Owner:
    return Owner(OwnerKind.SERVICE, name, pid, "python3", "root", cgroup=f"/system.slice/{name}")


def socket_unit(name: str, *activates: str) -> Owner:
    return Owner(OwnerKind.SOCKET, name, 1, "systemd", "root", activates=activates)


SESSION = Owner(OwnerKind.SESSION, "session-c1.scope", 412, "python3", "alice",
                cgroup="/user.slice/user-1000.slice/session-c1.scope")  # fmt: skip
CONTAINER = Owner(OwnerKind.CONTAINER, "docker.service", 4000, "docker-proxy", "root",
                  container="3f2a" * 16, container_name="web", runtime="docker")  # fmt: skip
UNKNOWN = Owner(OwnerKind.UNKNOWN, user="root")


def facts(name: str, description: str | None = None, **more: Any) -> UnitFacts:
    more.setdefault("active_state", "active")
    more.setdefault("sub_state", "running")
    return UnitFacts(name, description=description, **more)


def capture(*holdings: tuple[Occupant, Owner], **more: Any) -> Capture:
    more.setdefault("local_ports", DEFAULT_LOCAL_PORTS)
    return Capture(tuple(Holding(o, w) for o, w in holdings), host="web1", taken_at=WHEN, **more)


def write(captured: Capture) -> str:
    return render(plan(captured), captured)


def read_back(text: str, tmp_path: Path) -> tuple[Registry, tuple[Finding, ...]]:
    """The text as `lint` and `check` read it: the registry and every finding."""
    path = tmp_path / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = load(RegistrySource(path))
    return loaded.registry, check_registry(loaded, DEFAULT_LOCAL_PORTS)


def errors(findings: tuple[Finding, ...]) -> list[str]:
    return [str(f) for f in findings if f.severity is Severity.ERROR]


def listens(registry: Registry, unit: str) -> list[str]:
    return [
        str(listen.claim()) + " v6only" * listen.v6only for listen in registry.units[unit].listen
    ]


def comments(text: str) -> list[str]:
    return [line.removeprefix("# ") for line in text.splitlines() if line.startswith("#")]


# --- a host with a bit of everything ------------------------------------------------------

MIXED = capture(
    (sock("::", 8080), service("web.service", 200)),
    (sock("127.0.0.1", 9090), service("metrics.service", 300)),
    (sock("0.0.0.0", 5353, "udp"), service("mdns.service", 400)),
    (sock("::", 8000), socket_unit("legacy.socket", "legacy.service")),
    (sock("0.0.0.0", 7000), SESSION),
    (sock("0.0.0.0", 8081), CONTAINER),
    (sock("::", 8081), CONTAINER),
    (sock("0.0.0.0", 40000, "udp"), service("resolver.service")),  # an outgoing query's port
    facts={
        "web.service": facts("web.service", "Web front end"),
        "metrics.service": facts("metrics.service", "metrics.service"),  # no Description=
        "legacy.service": facts("legacy.service", "Legacy API", active_state="inactive"),
    },
)


def test_a_mixed_host_gives_a_valid_registry_of_its_units(tmp_path: Path) -> None:
    text = write(MIXED)
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert list(registry.units) == [
        "legacy.service", "mdns.service", "metrics.service", "web.service",
    ]  # fmt: skip
    assert listens(registry, "web.service") == ["8080/tcp"]
    assert listens(registry, "metrics.service") == ["127.0.0.1:9090/tcp"]
    assert listens(registry, "mdns.service") == ["0.0.0.0:5353/udp"]
    # The socket unit's port is the service's, with the socket unit allowed to hold it.
    assert listens(registry, "legacy.service") == ["8000/tcp"]
    assert registry.units["legacy.service"].via == ("legacy.socket",)
    assert registry.units["web.service"].via == ()
    assert registry.units["web.service"].description == "Web front end"
    assert registry.units["legacy.service"].description == "Legacy API"
    assert registry.units["metrics.service"].description is None
    assert {u.mode for u in registry.units.values()} == {Mode.WARN}


def test_what_no_unit_owns_is_a_comment_saying_what_it_is() -> None:
    lines = comments(write(MIXED))

    unmapped = lines[lines.index("Not mapped to a unit:") + 1 :]
    assert unmapped[0] == (
        "0.0.0.0:7000/tcp: alice's login session session-c1.scope (pid 412 python3) — "
        "not a unit, left out"
    )
    # docker-proxy's two sockets are one claim, named by the container.
    assert unmapped[1].startswith("8081/tcp: container 3f2a3f2a3f2a (web) via docker.service")
    assert unmapped[1].endswith("a container published by docker.service, not a unit of its own, "
                                "left out")  # fmt: skip
    assert "1 UDP socket on ports of the ephemeral range 32768-60999" in " ".join(lines)
    assert not any("40000" in line for line in lines)
    assert "resolver.service" not in write(MIXED)


PODMAN_ID = "26b4" * 16
# Each owner of a modern host that is not a unit of the system's, and what init says it is.
LEFT_OUT = [
    (Owner(OwnerKind.CONTAINER, "session-c3.scope", 242, "conmon", "root", container=PODMAN_ID,
           container_name="web", runtime="podman"),
     "podman container 26b426b426b4 (web) via session-c3.scope (pid 242 conmon) — a podman "
     "container, not a unit of its own (a Quadlet unit runs it as one), left out"),
    (Owner(OwnerKind.CONTAINER, "podman-182.scope", 197, "rootlessport", "alice",
           container=PODMAN_ID, container_name="webu", runtime="podman"),
     "podman container 26b426b426b4 (webu) of alice via podman-182.scope (pid 197 "
     "rootlessport) — alice's rootless container, not the system's, left out"),
    (Owner(OwnerKind.CONTAINER, f"docker-{PODMAN_ID}.scope", 90, "httpd", "root",
           container=PODMAN_ID, container_name="hn", runtime="docker", host_network=True),
     "— a container on the host's network, not a unit of its own, left out"),
    (Owner(OwnerKind.CONTAINER, f"cri-containerd-{PODMAN_ID}.scope", 91, "nginx", "root",
           container=PODMAN_ID, runtime="kubernetes", host_network=True),
     "— a Kubernetes pod's, managed by the kubelet, left out"),
    (Owner(OwnerKind.MACHINE, "machine-bbm.scope", 44, "python3", "root", container_name="bbm"),
     "machine bbm (machine-bbm.scope, systemd-nspawn) (pid 44 python3) — a systemd-nspawn "
     "machine's payload, not a unit of its own, left out"),
]  # fmt: skip


@pytest.mark.parametrize(("owner", "said"), LEFT_OUT)
def test_an_owner_that_is_not_a_system_unit_is_said_what_it_is(owner: Owner, said: str) -> None:
    lines = comments(write(capture((sock("0.0.0.0", 7100), owner))))

    (line,) = [line for line in lines if line.startswith("0.0.0.0:7100/tcp: ")]
    assert line.endswith(said), line


def test_a_quadlet_units_container_is_registered_under_that_unit(tmp_path: Path) -> None:
    quadlet = Owner(OwnerKind.CONTAINER, "webq.service", 300, "conmon", "root",
                    container=PODMAN_ID, container_name="webq", runtime="podman")  # fmt: skip
    registry, findings = read_back(write(capture((sock("::", 18121), quadlet))), tmp_path)

    assert findings == ()
    assert listens(registry, "webq.service") == ["18121/tcp"]


def test_header_says_where_when_and_why_warn(tmp_path: Path) -> None:
    text = write(MIXED)
    registry, _ = read_back(text, tmp_path)

    assert text.startswith("# Written by 'portguard init' on web1 at 2026-01-02T03:04:05Z")
    assert "\ndefaults:\n  mode: warn\n" in text
    assert "'mode: enforce'" in text
    assert all(unit.mode is Mode.WARN for unit in registry.units.values())


def test_nothing_to_register_is_still_a_valid_registry(tmp_path: Path) -> None:
    text = write(capture((sock("0.0.0.0", 7000), SESSION)))
    registry, findings = read_back(text, tmp_path)

    assert errors(findings) == []
    assert registry.units == {}
    assert "0.0.0.0:7000/tcp: alice's login session" in text


# --- sockets -> claims ---------------------------------------------------------------------

MERGES = [
    ([sock("::", 80)], ["80/tcp"]),  # dual-stack [::]
    ([sock("0.0.0.0", 80), sock("::", 80, v6only=True)], ["80/tcp"]),  # the pair a bare claim is
    ([sock("0.0.0.0", 80)], ["0.0.0.0:80/tcp"]),
    ([sock("::", 80, v6only=True)], ["[::]:80/tcp v6only"]),
    ([sock("127.0.0.1", 80), sock("::1", 80)], ["127.0.0.1:80/tcp", "[::1]:80/tcp"]),
    ([sock("0.0.0.0", 53, "udp"), sock("127.0.0.1", 53, "udp")], ["0.0.0.0:53/udp"]),
    ([sock("::", 80, v6only=True), sock("127.0.0.1", 80), sock("::1", 80)],
     ["127.0.0.1:80/tcp", "[::]:80/tcp v6only"]),
    ([sock("0.0.0.0", 80)] * 4, ["0.0.0.0:80/tcp"]),  # SO_REUSEPORT workers
    ([sock("::", 53, "udp"), sock("::", 53)], ["53/tcp", "53/udp"]),
    ([sock("::", 9000), sock("::", 443), sock("10.0.0.2", 80), sock("10.0.0.1", 80)],
     ["10.0.0.1:80/tcp", "10.0.0.2:80/tcp", "443/tcp", "9000/tcp"]),
]  # fmt: skip


@pytest.mark.parametrize(("sockets", "expected"), MERGES)
def test_sockets_of_one_unit_become_the_fewest_claims(
    sockets: list[Occupant], expected: list[str], tmp_path: Path
) -> None:
    text = write(capture(*((s, service("a.service")) for s in sockets)))
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert listens(registry, "a.service") == expected


def test_processes_of_one_unit_are_one_unit(tmp_path: Path) -> None:
    text = write(capture((sock("::", 80), service("a.service", 10)),
                         (sock("::", 80), service("a.service", 11))))  # fmt: skip
    registry, _ = read_back(text, tmp_path)
    assert listens(registry, "a.service") == ["80/tcp"]


ADDRESSES = ["0.0.0.0", "127.0.0.1", "10.0.0.1", "::", "::1", "fe80::1"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    binds=st.lists(
        st.tuples(st.sampled_from(ADDRESSES), st.sampled_from([80, 81]),
                  st.sampled_from(["tcp", "udp"]), st.booleans()),
        min_size=1, max_size=8,
    )
)  # fmt: skip
def test_claims_cover_exactly_the_sockets_without_overlapping_each_other(
    binds: list[tuple[str, int, str, bool]], tmp_path: Path
) -> None:
    sockets = [sock(a, p, proto, v6only=v6 and ":" in a) for a, p, proto, v6 in binds]
    registry, findings = read_back(write(capture(*((s, service("a.service")) for s in sockets))),
                                   tmp_path)  # fmt: skip
    claims = [listen.claim() for listen in registry.units["a.service"].listen]

    assert findings == ()  # not even an overlap-self warning
    for s in sockets:  # every family and address a socket binds is inside a claim
        assert _within(set(reach(s.as_claim())), _reach_of(claims, s.proto, s.port)), s
    for claim in claims:  # and no claim reaches further than the sockets do
        bound = [s.as_claim() for s in sockets if (s.proto, s.port) == (claim.proto, claim.first)]
        assert _within(set(reach(claim)), _reach_of(bound, claim.proto, claim.first)), claim


def _reach_of(claims: list[Claim], proto: Proto, port: int) -> set[Any]:
    return {r for c in claims if (c.proto, c.first) == (proto, port) for r in reach(c)}


def _within(inner: set[Any], outer: set[Any]) -> bool:
    """Whether every (family, address) of INNER is bound by OUTER (None: the whole family)."""
    return all(any(f == g and a in (None, b) for g, a in outer) for f, b in inner)


# --- socket units --------------------------------------------------------------------------

SOCKET_CASES = [
    (("a.service",), "a.service", ("a.socket",)),
    (("a@.service",), "a.socket", ()),  # Accept=yes: an instance per connection
    (("a.service", "b.service"), "a.socket", ()),
    ((), "a.socket", ()),  # systemd could not be asked
]


@pytest.mark.parametrize(("activates", "key", "via"), SOCKET_CASES)
def test_a_socket_units_port_goes_to_the_one_service_it_starts(
    activates: tuple[str, ...], key: str, via: tuple[str, ...], tmp_path: Path
) -> None:
    text = write(capture((sock("::", 8000), socket_unit("a.socket", *activates))))
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert list(registry.units) == [key]
    assert registry.units[key].via == via


def test_a_socket_units_service_comes_from_its_facts_when_the_owner_lacks_it(
    tmp_path: Path,
) -> None:
    captured = capture((sock("::", 8000), socket_unit("a.socket")),
                       facts={"a.socket": facts("a.socket", triggers=("a.service",))})  # fmt: skip
    registry, _ = read_back(write(captured), tmp_path)
    assert registry.units["a.service"].via == ("a.socket",)


def test_a_service_and_its_socket_unit_share_one_entry(tmp_path: Path) -> None:
    text = write(capture((sock("::", 8000), socket_unit("a.socket", "a.service")),
                         (sock("127.0.0.1", 9000), service("a.service"))))  # fmt: skip
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert listens(registry, "a.service") == ["8000/tcp", "127.0.0.1:9000/tcp"]
    assert registry.units["a.service"].via == ("a.socket",)


def test_without_systemd_what_is_known_is_written_and_the_gaps_are_listed(
    tmp_path: Path,
) -> None:
    gap = "systemd did not answer over D-Bus within 2s; unit details are missing"
    text = write(capture((sock("::", 8000), socket_unit("a.socket")),
                         (sock("::", 80), service("b.service")), gaps=(gap,)))  # fmt: skip
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert list(registry.units) == ["a.socket", "b.service"]
    assert gap in comments(text)


# --- never an invalid registry -------------------------------------------------------------


def test_a_port_two_units_hold_is_given_to_the_first_and_the_other_is_a_comment(
    tmp_path: Path,
) -> None:
    text = write(capture(
        (sock("0.0.0.0", 5300), service("b.service")),
        (sock("0.0.0.0", 5300), service("a.service")),
        (sock("0.0.0.0", 6000), service("b.service")),
        (sock("::", 7000), service("c.service")),
        (sock("127.0.0.1", 7000), service("d.service")),
    ))  # fmt: skip
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert listens(registry, "a.service") == ["0.0.0.0:5300/tcp"]
    assert listens(registry, "b.service") == ["0.0.0.0:6000/tcp"]
    assert listens(registry, "c.service") == ["7000/tcp"]
    assert "d.service" not in registry.units  # nothing of its own left: no empty entry
    lines = comments(text)
    assert (
        "0.0.0.0:5300/tcp: held by b.service too, but it overlaps 0.0.0.0:5300/tcp given to "
        "a.service above, left out (give one of them another port, or list one in the "
        "other's 'via')"
    ) in lines
    assert any(line.startswith("127.0.0.1:7000/tcp: held by d.service too") for line in lines)


def test_an_invalid_text_is_refused_as_internal_error(tmp_path: Path) -> None:
    text = "version: 1\nunits:\n  a.service: {listen: [80/tcp]}\n  b.service: {listen: [80]}\n"
    with pytest.raises(GeneratedRegistryInvalid) as raised:
        validate(text, DEFAULT_LOCAL_PORTS)
    assert raised.value.exit_code is Exit.SOFTWARE
    assert "<generated registry>:4:" in raised.value.message
    assert "[overlap]" in raised.value.message


def test_a_warning_alone_does_not_refuse_the_registry() -> None:
    validate("version: 1\nunits:\n  a.service: {listen: [45000/tcp]}\n", DEFAULT_LOCAL_PORTS)


def test_two_udp_sockets_on_one_port_share_it_and_both_units_keep_their_claim(
    tmp_path: Path,
) -> None:
    """avahi-daemon beside another mDNS responder: the kernel let both bind 5353/udp."""
    text = write(capture(
        (sock("0.0.0.0", 5353, "udp"), service("avahi-daemon.service")),
        (sock("0.0.0.0", 5353, "udp"), service("systemd-resolved.service")),
        (sock("0.0.0.0", 53, "udp"), service("systemd-resolved.service")),
    ))  # fmt: skip
    registry, findings = read_back(text, tmp_path)

    # No error: lint only says, once, on what terms the kernel shares the port.
    assert [(f.severity, f.rule) for f in findings] == [("warning", "share")]
    assert "whoever runs them" in findings[0].message
    for unit in ("avahi-daemon.service", "systemd-resolved.service"):
        (entry,) = [e for e in registry.units[unit].listen if e.claim().first == 5353]
        assert (entry.reuseaddr, entry.reuseport) == (True, True)
    assert "{port: '0.0.0.0:5353/udp', reuseaddr: true, reuseport: true}" in text
    (dns,) = [e for e in registry.units["systemd-resolved.service"].listen if e.text.startswith(
        "0.0.0.0:53/")]  # fmt: skip
    assert (dns.reuseaddr, dns.reuseport) == (False, False)  # one socket alone: no sharing


def test_a_listener_on_an_ephemeral_port_is_a_comment_not_a_claim(tmp_path: Path) -> None:
    """containerd's stream server: 127.0.0.1 on a port the kernel picks at each start."""
    text = write(capture(
        (sock("127.0.0.1", 45000), service("containerd.service")),
        (sock("0.0.0.0", 8080), service("web.service")),
    ))  # fmt: skip
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert "containerd.service" not in registry.units
    assert listens(registry, "web.service") == ["0.0.0.0:8080/tcp"]
    assert any(
        line.startswith("127.0.0.1:45000/tcp: containerd.service: in the ephemeral range")
        for line in comments(text)
    ), comments(text)


def test_a_reserved_port_in_the_ephemeral_range_is_claimed(tmp_path: Path) -> None:
    reserved = LocalPorts((32768, 60999), PortSet.parse("45000"))
    text = write(capture((sock("127.0.0.1", 45000), service("app.service")), local_ports=reserved))
    registry, findings = read_back(text, tmp_path)
    assert errors(findings) == []
    assert listens(registry, "app.service") == ["127.0.0.1:45000/tcp"]


@pytest.mark.parametrize(("pinned", "claimed"), [(frozenset(), False), (frozenset({662}), True)])
def test_rpc_statd_ports_are_claimed_only_when_nfs_conf_pins_them(
    tmp_path: Path, pinned: frozenset[int], claimed: bool
) -> None:
    captured = capture(
        (sock("0.0.0.0", 662), service("rpc-statd.service")),
        (sock("0.0.0.0", 662, "udp"), service("rpc-statd.service")),
        (sock("0.0.0.0", 111), service("rpcbind.service")),
    )
    text = write(replace(captured, statd_ports=pinned))
    registry, findings = read_back(text, tmp_path)
    assert findings == ()
    assert listens(registry, "rpcbind.service") == ["0.0.0.0:111/tcp"]
    assert ("rpc-statd.service" in registry.units) is claimed
    if not claimed:
        why = "rpc-statd.service picks this port at random at each start; pin it with /etc/nfs"
        assert any(why in line for line in comments(text)), comments(text)


# --- hostile text --------------------------------------------------------------------------

HOSTILE = [
    ("API # not a comment", "API # not a comment"),
    ("key: value", "key: value"),
    ("'single' and \"double\" quotes", "'single' and \"double\" quotes"),
    ("true", "true"),
    ("8080", "8080"),
    ("- a list?", "- a list?"),
    ("{a: b}", "{a: b}"),
    ("&anchor *alias !tag %dir @at `tick`", "&anchor *alias !tag %dir @at `tick`"),
    ("x\nversion: 2", "x version: 2"),
    ("x\r\nunits: {}", "x units: {}"),
    ("a\u2028b\x85c", "a b c"),
    ("bell\x07 nul\x00", "bell nul"),
    ("  padded  ", "padded"),
    ("Ünïcödé ✓ 日本", "Ünïcödé ✓ 日本"),
    ("x" * 300, "x" * 300),
]


@pytest.mark.parametrize(("description", "expected"), HOSTILE)
def test_any_description_reads_back_as_one_line_of_text(
    description: str, expected: str, tmp_path: Path
) -> None:
    captured = capture((sock("::", 80), service("a.service")),
                       facts={"a.service": facts("a.service", description)})  # fmt: skip
    registry, findings = read_back(write(captured), tmp_path)

    assert findings == ()
    assert list(registry.units) == ["a.service"]
    assert registry.units["a.service"].description == expected


@pytest.mark.parametrize("description", ["", " \n\t", "\x00"])
def test_a_description_with_nothing_to_show_is_left_out(description: str, tmp_path: Path) -> None:
    captured = capture((sock("::", 80), service("a.service")),
                       facts={"a.service": facts("a.service", description)})  # fmt: skip
    registry, findings = read_back(write(captured), tmp_path)
    assert findings == ()
    assert registry.units["a.service"].description is None


def test_hostile_comms_and_host_names_stay_inside_their_comments(tmp_path: Path) -> None:
    evil = Owner(OwnerKind.SESSION, "session-3.scope", 5, "x\nunits: {}", "eve\rversion: 2")
    captured = Capture(
        (Holding(sock("::", 7000), evil), Holding(sock("::", 80), service("a.service"))),
        gaps=("gap\nversion: 3",), local_ports=DEFAULT_LOCAL_PORTS, host="h\nversion: 4",
        taken_at=WHEN,
    )  # fmt: skip
    text = write(captured)
    registry, findings = read_back(text, tmp_path)

    assert findings == ()
    assert list(registry.units) == ["a.service"]
    assert yaml.safe_load(text)["version"] == 1
    assert all(line.startswith(("#", " ", "version", "defaults", "units")) or not line
               for line in text.splitlines())  # fmt: skip


# --- clients -------------------------------------------------------------------------------


def test_client_sockets_are_left_out_by_the_running_kernels_range(tmp_path: Path) -> None:
    narrow = LocalPorts((50000, 50100), PortSet())
    captured = capture(
        (sock("0.0.0.0", 40000, "udp"), service("a.service")),  # outside this range: kept
        (sock("0.0.0.0", 50050, "udp"), service("a.service")),
        (sock("10.0.0.1", 5000, "udp", peer=("10.0.0.9", 53)), service("a.service")),
        local_ports=narrow,
    )  # fmt: skip
    text = write(captured)
    registry, _ = read_back(text, tmp_path)

    assert listens(registry, "a.service") == ["0.0.0.0:40000/udp"]
    assert "2 UDP sockets on ports of the ephemeral range 50000-50100" in text


def test_without_the_kernels_range_linuxs_default_is_used(tmp_path: Path) -> None:
    captured = capture((sock("0.0.0.0", 40000, "udp"), service("a.service")),
                       (sock("0.0.0.0", 53, "udp"), service("a.service")),
                       local_ports=None)  # fmt: skip
    registry, _ = read_back(write(captured), tmp_path)
    assert listens(registry, "a.service") == ["0.0.0.0:53/udp"]


# --- run -----------------------------------------------------------------------------------


def test_run_prints_the_validated_registry(tmp_path: Path) -> None:
    out = StringIO()
    assert bootstrap.run(capture=lambda: MIXED, out=out) == 0
    registry, findings = read_back(out.getvalue(), tmp_path)
    assert findings == ()
    assert "web.service" in registry.units


def test_run_prints_nothing_when_its_own_output_would_not_lint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bootstrap, "render", lambda *_: "version: 2\n")
    out = StringIO()
    with pytest.raises(GeneratedRegistryInvalid):
        bootstrap.run(capture=lambda: MIXED, out=out)
    assert out.getvalue() == ""


def test_overlaps_are_judged_as_lint_judges_them() -> None:
    # The demotion rests on claims.overlaps; a v6only [::] and 0.0.0.0 do not collide.
    v6 = Claim(Proto.TCP, 80, 80, ipaddress.ip_address("::"), v6only=True)
    v4 = Claim(Proto.TCP, 80, 80, ipaddress.ip_address("0.0.0.0"))
    assert not overlaps(v6, v4)
    captured = capture((sock("::", 80, v6only=True), service("a.service")),
                       (sock("0.0.0.0", 80), service("b.service")))  # fmt: skip
    assert [u.name for u in plan(captured).units] == ["a.service", "b.service"]


# --- pools a daemon's own configuration names (host/daemonconf.py) -----------------------------

TURN_POOL = Claim(Proto.UDP, 49152, 65535, reuseaddr=False, pool=1)
FTP_POOL = Claim(Proto.TCP, 40000, 40100, pool=1)


def test_a_daemons_configured_pool_is_claimed_as_a_pool_covering_its_sockets(
    tmp_path: Path,
) -> None:
    captured = capture(
        (sock("0.0.0.0", 3478, "udp"), service("coturn.service")),
        (sock("0.0.0.0", 50000, "udp"), service("coturn.service")),  # a relay allocation
        (sock("::", 21), service("vsftpd.service")),
        (sock("::", 40007), service("vsftpd.service")),  # a passive transfer under way
        local_ports=LocalPorts((32768, 48000), PortSet()),
        pools={"coturn.service": (TURN_POOL,), "vsftpd.service": (FTP_POOL,),
               "absent.service": (Claim(Proto.TCP, 1000, 1010, pool=1),)},
    )  # fmt: skip
    text = write(captured)
    registry, findings = read_back(text, tmp_path)
    assert errors(findings) == []
    assert listens(registry, "coturn.service") == ["0.0.0.0:3478/udp", "49152-65535/udp"]
    assert listens(registry, "vsftpd.service") == ["21/tcp", "40000-40100/tcp"]
    assert [listen.pool for listen in registry.units["coturn.service"].listen] == [None, 1]
    assert "absent.service" not in registry.units  # a pool alone names no unit to guard
    assert "{port: 49152-65535/udp, pool: true}" in text


def test_a_pool_that_overlaps_another_units_port_is_left_out(tmp_path: Path) -> None:
    captured = capture(
        (sock("0.0.0.0", 3478, "udp"), service("coturn.service")),
        (sock("0.0.0.0", 50000, "udp"), service("aaa-media.service")),
        local_ports=LocalPorts((32768, 48000), PortSet()),
        pools={"coturn.service": (TURN_POOL,)},
    )
    registry, findings = read_back(write(captured), tmp_path)
    assert errors(findings) == []
    assert listens(registry, "coturn.service") == ["0.0.0.0:3478/udp"]

"""The registry as concrete assignments: which unit each claim is given to (assignments.py)."""

import ipaddress

import pytest

from portguard.registry.assignments import assigned, assignments
from portguard.registry.claims import Claim, Proto
from portguard.registry.entries import Registry
from tests.conftest import Registry as Files
from tests.conftest import describe

REGISTRY = """
version: 1
units:
  web.service:
    listen: [8080/tcp, "127.0.0.1:9090/tcp", 5353/udp]
    owner: web-team
    via: [web.socket]
  redis@.service:
    listen: ["%i/tcp"]
  mail@.service:
    listen: [2525/tcp]
  dns.service:
    listen: ["[::]:53/udp", {port: "[::]:54/udp", v6only: true}]
  batch.service:
    listen: [9000-9010/tcp]
"""


@pytest.fixture
def registry(reg: Files) -> Registry:
    reg.write("registry.yaml", REGISTRY)
    loaded = reg.load("registry.yaml")
    assert loaded.findings == (), describe(loaded.findings)
    return loaded.registry


def test_assignments_expand_templates_per_instance(registry: Registry) -> None:
    instances = [
        "redis@6380.service",
        "redis@6379.service",
        "redis@6379.service",  # named twice, given once
        "redis@main.service",  # no port: `%i` has no claim for it
        "mail@eu.service",  # mail's template claims a fixed port
        "other@1.service",  # not in the registry
        "web.service",
    ]
    found = [(a.unit, str(a.claim)) for a in assignments(registry, instances)]
    assert found == [
        ("web.service", "8080/tcp"),
        ("web.service", "127.0.0.1:9090/tcp"),
        ("web.service", "5353/udp"),
        ("redis@6379.service", "6379/tcp"),
        ("redis@6380.service", "6380/tcp"),
        ("mail@.service", "2525/tcp"),
        ("dns.service", "[::]:53/udp"),
        ("dns.service", "[::]:54/udp"),
        ("batch.service", "9000-9010/tcp"),
    ]


def test_a_template_without_instances_has_no_port_claim(registry: Registry) -> None:
    units = {a.unit for a in assignments(registry)}
    assert units == {"web.service", "mail@.service", "dns.service", "batch.service"}


def test_an_instance_may_name_a_range(registry: Registry) -> None:
    found = [a.claim for a in assignments(registry, ["redis@7000-7002.service"])]
    assert Claim(Proto.TCP, 7000, 7002) in found


def test_assignment_carries_its_entry(registry: Registry) -> None:
    web, *_ = assignments(registry)
    assert web.holders == ("web.service", "web.socket")
    assert web.team == "web-team"
    assert web.listen.text == "8080/tcp"
    mail = next(a for a in assignments(registry) if a.unit == "mail@.service")
    assert mail.holders == ("mail@.service",)
    assert mail.team is None


REDIS = "redis@.service"
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # A wildcard target meets a specific address; another specific address does not.
        (Claim(Proto.TCP, 9090, 9090), ["web.service 127.0.0.1:9090/tcp"]),
        (Claim(Proto.TCP, 9090, 9090, V4("127.0.0.1")), ["web.service 127.0.0.1:9090/tcp"]),
        (Claim(Proto.TCP, 9090, 9090, V4("127.0.0.2")), []),
        (Claim(Proto.TCP, 8080, 8080, V4("10.0.0.1")), ["web.service 8080/tcp"]),
        # The protocol must match.
        (Claim(Proto.UDP, 5353, 5353), ["web.service 5353/udp"]),
        (Claim(Proto.UDP, 9090, 9090), []),
        # [::] reaches IPv4 too, unless v6only.
        (Claim(Proto.UDP, 53, 53, V4("0.0.0.0")), ["dns.service [::]:53/udp"]),
        (Claim(Proto.UDP, 54, 54, V4("0.0.0.0")), []),
        (Claim(Proto.UDP, 54, 54, V6("::1")), ["dns.service [::]:54/udp"]),
        # Ranges overlap when any port is shared.
        (Claim(Proto.TCP, 9010, 9010), ["batch.service 9000-9010/tcp"]),
        (Claim(Proto.TCP, 9011, 9020, V4("127.0.0.1")), []),
    ],
    ids=str,
)
def test_assigned_by_overlap(registry: Registry, target: Claim, expected: list[str]) -> None:
    # redis@.service's `%i` takes every TCP port (the next test); left out here.
    found = [f"{a.unit} {a.claim}" for a in assigned(registry, target) if a.entry.name != REDIS]
    assert found == expected


def test_assigned_names_the_template_instance_by_port(registry: Registry) -> None:
    found = assigned(registry, Claim(Proto.TCP, 6379, 6379))
    assert [(a.unit, a.claim) for a in found] == [
        ("redis@6379.service", Claim(Proto.TCP, 6379, 6379))
    ]
    mail = assigned(registry, Claim(Proto.TCP, 2525, 2525))
    assert [a.unit for a in mail] == ["redis@2525.service", "mail@.service"]


def test_assigned_respects_a_templates_address(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        'version: 1\nunits:\n  redis@.service:\n    listen: ["127.0.0.1:%i/tcp"]\n',
    )
    registry = reg.load("registry.yaml").registry
    assert [a.unit for a in assigned(registry, Claim(Proto.TCP, 6379, 6379))] == [
        "redis@6379.service"
    ]
    assert assigned(registry, Claim(Proto.TCP, 6379, 6379, V4("127.0.0.2"))) == []
    assert assigned(registry, Claim(Proto.UDP, 6379, 6379)) == []

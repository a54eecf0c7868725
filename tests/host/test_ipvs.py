"""IPVS virtual services from /proc/net/ip_vs (host/ipvs.py), and what they take (policy/
redirects.py). This kernel has no IPVS (CONFIG_IP_VS is not set), so the table is one written
in the format net/netfilter/ipvs/ip_vs_ctl.c prints (ip_vs_info_seq_show), labelled as such in
tests/data/ip_vs.recorded: kube-proxy's IPVS mode, a NodePort on the node address 192.0.2.10
and on 2001:db8::10, a ClusterIP, and a firewall-mark service."""

import ipaddress
import socket
from pathlib import Path

from portguard.host.addresses import Address
from portguard.host.ipvs import parse, virtual_services
from portguard.policy.redirects import Host, judge
from portguard.registry.claims import Claim, Proto
from tests.policy.nat_rules import HOST, ruleset

RECORDED = Path(__file__).parents[1] / "data" / "ip_vs.recorded"
NODEPORT = 30104
V6 = ipaddress.ip_address("2001:db8::10").packed


def test_the_kernels_format_is_read() -> None:
    services = virtual_services(RECORDED)
    first = services[0]
    assert (first.proto, first.address, first.port, first.scheduler) == (6, HOST, NODEPORT, "rr")
    assert [(socket.inet_ntoa(a), p, f) for a, p, f in first.reals] == [
        ("10.244.1.5", 80, "Masq"), ("10.244.1.6", 80, "Masq"),
    ]  # fmt: skip
    assert [(s.proto, s.port) for s in services] == [(6, NODEPORT), (6, 443), (17, NODEPORT),
                                                     (6, NODEPORT), (0, 0)]  # fmt: skip
    assert services[3].address == V6
    assert services[4].mark == 1
    assert virtual_services(Path("/nonexistent/ip_vs")) == []
    assert parse("IP Virtual Server version 1.2.1 (size=4096)\nProt\n  ->\n") == []


def test_a_nodeport_on_every_node_address_is_redirected_and_named() -> None:
    services = tuple(s for s in virtual_services(RECORDED) if s.mark is None)
    v4_only = Host((Address(socket.AF_INET, HOST, 0, 2),), ((2, "eth0"),), services)
    judged = judge(ruleset({}), [Claim(Proto.TCP, NODEPORT, NODEPORT)], v4_only, unit="a.service")
    (taken,) = judged.taken
    assert taken.family == "IPv4" and taken.taker.kind == "ipvs"
    assert taken.taker.to == "10.244.1.5:80, 10.244.1.6:80"
    assert f"ipvsadm -Ln -t 192.0.2.10:{NODEPORT}" in taken.taker.remedy
    # UDP on the same port has its own virtual service; another port has none.
    udp = judge(ruleset({}), [Claim(Proto.UDP, NODEPORT, NODEPORT)], v4_only, unit="a.service")
    assert len(udp.taken) == 1
    assert judge(ruleset({}), [Claim(Proto.TCP, 8080, 8080)], v4_only, unit="a.service").taken == []


def test_a_node_address_without_the_service_leaves_it_partial() -> None:
    services = tuple(s for s in virtual_services(RECORDED) if s.mark is None)
    other = socket.inet_aton("198.51.100.7")
    two = Host((Address(socket.AF_INET, HOST, 0, 2), Address(socket.AF_INET, other, 0, 3)),
               ((2, "eth0"), (3, "eth1")), services)  # fmt: skip
    judged = judge(ruleset({}), [Claim(Proto.TCP, NODEPORT, NODEPORT)], two, unit="a.service")
    assert judged.taken == [] and len(judged.partly) == 1


def test_a_firewall_mark_service_is_a_gap_not_a_verdict() -> None:
    services = tuple(virtual_services(RECORDED))
    host = Host((Address(socket.AF_INET, HOST, 0, 2),), ((2, "eth0"),), services)
    judged = judge(ruleset({}), [Claim(Proto.TCP, 8080, 8080)], host, unit="a.service")
    assert judged.taken == [] and judged.partly == []
    assert any("firewall-mark" in gap for gap in judged.gaps)

"""The symbolic run of the NAT hooks (policy/natflow.py, natmatch.py) and the judgement on a
unit's claims (policy/redirects.py), on rulesets built in the kernel's dump shapes
(tests/policy/nat_rules.py). Each case says where a real connection would land; the system
tests prove the same shapes against the kernel."""

import ipaddress
import struct

from portguard.commands.redirects import verdict
from portguard.host.nftables import Verdict
from portguard.policy.natflow import flow
from portguard.policy.natmatch import Packets
from portguard.policy.redirects import judge
from portguard.policy.report import Report
from portguard.policy.report import Verdict as Outcome
from portguard.registry.claims import Claim, Proto
from tests.policy.nat_rules import (
    HERE,
    HOST,
    OTHER_HOST,
    POD,
    dnat,
    dport,
    l4proto,
    redirect,
    ruleset,
    saddr_in,
    vmap,
)
from tests.policy.nat_rules import (
    verdict as jump,
)

CLAIM = Claim(Proto.TCP, 8080, 8080)


def packets(port: int = 8080, address: bytes = HOST, hook: str = "prerouting") -> Packets:
    return Packets("ip", hook, address, 6, port, HERE.interfaces)


def test_a_dnat_of_the_port_takes_every_packet() -> None:
    rules = ruleset({"pre": [l4proto() + dport(8080) + dnat(POD, 80)]})
    found = flow(rules, packets())
    assert found.certain is not None and found.certain.address == POD and found.certain.port == 80
    assert flow(rules, packets(8081)).certain is None  # another port: untouched


def test_a_source_match_makes_it_partial() -> None:
    rules = ruleset({"pre": [saddr_in(OTHER_HOST[:3] + b"\0", 24) + dport(8080) + dnat(POD, 80)]})
    found = flow(rules, packets())
    assert found.certain is None
    assert [r.address for r in found.partial] == [POD]


def test_an_accept_for_some_sources_before_the_dnat_makes_it_partial() -> None:
    escape = saddr_in(b"\x0a\0\0\0", 8) + jump("accept")
    rules = ruleset({"pre": [escape, dport(8080) + dnat(POD, 80)]})
    found = flow(rules, packets())
    assert found.certain is None and len(found.partial) == 1


def test_jumps_returns_and_a_statistic_split_covering_all_are_followed() -> None:
    # kube-proxy's iptables shape: KUBE-SVC draws at random, its last rule takes the rest.
    statistic = [{"name": "statistic", "rev": 0, "info": bytes(24)}]
    from portguard.host.nftables import Expr  # noqa: PLC0415

    rules = ruleset({
        "pre": [jump("jump", "services")],
        "services": [l4proto() + dport(8080) + jump("jump", "svc")],
        "svc": [[Expr("match", statistic[0]), *jump("jump", "sep1")], jump("jump", "sep2")],
        "sep1": [dnat(POD, 80)],
        "sep2": [dnat(POD, 81)],
    })  # fmt: skip
    found = flow(rules, packets())
    assert found.certain is not None and found.certain.port == 81
    assert [r.port for r in found.partial] == [80]
    assert [r.chain for r in found.certain.path] == ["pre", "services", "svc"]


def test_a_verdict_map_on_protocol_and_port_and_a_random_number() -> None:
    # kube-proxy's nftables shape: meta l4proto . th dport vmap, then numgen random mod 2 vmap.
    from portguard.host.nftables import Expr  # noqa: PLC0415

    key = bytes([6]) + b"\0\0\0" + struct.pack(">H", 8080) + b"\0\0"
    nodeports = vmap("nodeports", {key: Verdict("goto", "ext")}, 8)
    draw = vmap("draw", {struct.pack("=I", i): Verdict("goto", f"ep{i}") for i in (0, 1)}, 4)
    lookup = [
        Expr("meta", {"key": 16, "dreg": 9}),
        Expr("payload", {"dreg": 10, "base": 2, "offset": 2, "len": 2}),
        Expr("lookup", {"set": "nodeports", "sreg": 9, "dreg": 0}),
    ]
    numgen = [Expr("numgen", {"dreg": 1, "modulus": 2, "type": 1}),
              Expr("lookup", {"set": "draw", "sreg": 1, "dreg": 0})]  # fmt: skip
    rules = ruleset(
        {"pre": [lookup], "ext": [numgen], "ep0": [dnat(POD, 80)], "ep1": [dnat(POD, 81)]},
        sets=(nodeports, draw),
    )
    assert flow(rules, packets()).certain is not None
    assert flow(rules, packets(8081)).certain is None
    half = struct.pack("=I", 0)
    lonely = vmap("draw", {half: Verdict("goto", "ep0")}, 4)  # one of two draws: partial
    partial = ruleset(
        {"pre": [lookup], "ext": [numgen], "ep0": [dnat(POD, 80)]}, sets=(nodeports, lonely)
    )
    found = flow(partial, packets())
    assert found.certain is None and len(found.partial) == 1


def test_an_unknown_expression_is_a_gap_never_a_certain_redirect() -> None:
    from portguard.host.nftables import Expr  # noqa: PLC0415

    rules = ruleset({"pre": [[Expr("future", {}), *dport(8080), *dnat(POD, 80)]]})
    found = flow(rules, packets())
    assert found.certain is None
    assert found.unknown and "future" in found.unknown[0]


def test_a_redirect_to_the_units_own_port_is_its_own_plumbing() -> None:
    rules = ruleset({"pre": [dport(8080) + redirect(8081)]})
    mine = [(Proto.TCP, 8080), (Proto.TCP, 8081)]
    assert judge(rules, [CLAIM], HERE, unit="a.service", own=mine).taken == []
    taken = judge(rules, [CLAIM], HERE, unit="a.service", own=mine[:1]).taken
    assert [t.taker.to for t in taken] == ["this host's port 8081"]


def test_a_loopback_claim_is_judged_by_the_output_path_only() -> None:
    loopback = Claim(Proto.TCP, 8080, 8080, ipaddress.ip_address("127.0.0.1"))
    prerouting = ruleset({"pre": [dport(8080) + dnat(POD, 80)]})
    assert judge(prerouting, [loopback], HERE, unit="a.service").taken == []
    output = ruleset({"out": [dport(8080) + dnat(POD, 80)]}, hook="output")
    assert len(judge(output, [loopback], HERE, unit="a.service").taken) == 1


def test_the_verdicts_and_their_words() -> None:
    free = Report(Outcome.FREE, "a.service", "8080/tcp free")
    certain = judge(
        ruleset({"pre": [dport(8080) + dnat(POD, 80)]}), [CLAIM], HERE, unit="a.service"
    )
    report = verdict(free, certain)
    assert report.verdict is Outcome.REDIRECTED and int(report.exit_code) == 69
    fields = report.journal_fields()
    assert fields["PORTGUARD_OWNER_KIND"] == "nat-rule"
    assert fields["PORTGUARD_REDIRECT_TO"] == "10.244.1.5:80"
    assert fields["PORTGUARD_RULE_CHAIN"] == "pre"
    assert "nft -a list chain ip t pre" in fields["PORTGUARD_REMEDY"]
    some = judge(ruleset({"pre": [saddr_in(b"\x0a\0\0\0", 8) + dport(8080) + dnat(POD, 80)]}),
                 [CLAIM], HERE, unit="a.service")  # fmt: skip
    warned = verdict(free, some)
    assert warned.verdict is Outcome.PARTLY_REDIRECTED and int(warned.exit_code) == 0
    assert warned.priority == 4


def test_what_one_port_says_of_the_others_holds_only_when_nothing_took_it() -> None:
    kube = ruleset({"pre": [dport(30080) + dnat(POD, 80), dport(80) + jump("accept")]})
    judged = judge(kube, [CLAIM], HERE, unit="a.service")
    assert judged.taken == [] and judged.partly == []
    # 8080 met two decisions on the port: every port but 30080 and 80 fares as 8080 did.
    assert sorted(judged.others_free[Proto.TCP]) == [(80, 80), (30080, 30080)]
    # A rule that redirects every port to this unit's own: nothing for this unit, but the
    # same rule takes any other unit's port. Nothing may be said of other ports.
    every = ruleset({"pre": [l4proto() + redirect(8081)]})
    mine = [(Proto.TCP, 8080), (Proto.TCP, 8081)]
    judged = judge(every, [CLAIM], HERE, unit="a.service", own=mine)
    assert judged.taken == [] and Proto.TCP not in judged.others_free
    # A decision on part of the port (a masked port) cannot be told as ports: nothing said.
    from portguard.host.nftables import Expr  # noqa: PLC0415

    masked = [Expr("payload", {"dreg": 1, "base": 2, "offset": 2, "len": 2}),
              Expr("bitwise", {"sreg": 1, "dreg": 1, "len": 2, "mask": b"\xff\x00",
                               "xor": b"\x00\x00"}),
              Expr("cmp", {"sreg": 1, "op": 0, "data": b"\x75\x00"}), *dnat(POD, 80)]  # fmt: skip
    judged = judge(ruleset({"pre": [masked]}), [CLAIM], HERE, unit="a.service")
    assert Proto.TCP not in judged.others_free

"""nftables rulesets built in the shapes the kernel dumps them (host/nftables.py's model), for
the pure tests of policy/natflow.py and policy/redirects.py. Written here, not read from a
kernel: the system tests (tests/system/test_redirects.py) read the real ones."""

import socket
import struct

from portguard.host.addresses import Address
from portguard.host.nftables import Chain, Element, Expr, NamedSet, Rule, Ruleset, Verdict
from portguard.policy.redirects import Host

HOST = socket.inet_aton("192.0.2.10")
OTHER_HOST = socket.inet_aton("198.51.100.7")
POD = socket.inet_aton("10.244.1.5")
HERE = Host(
    (Address(socket.AF_INET, HOST, 0, 2), Address(socket.AF_INET, b"\x7f\0\0\1", 254, 1)),
    ((1, "lo"), (2, "eth0")),
)


def l4proto(proto: int = 6) -> list[Expr]:
    return [Expr("meta", {"key": 16, "dreg": 1}), Expr("cmp", {"sreg": 1, "op": 0,
                                                              "data": bytes([proto])})]  # fmt: skip


def dport(port: int, op: int = 0) -> list[Expr]:
    return [Expr("payload", {"dreg": 1, "base": 2, "offset": 2, "len": 2}),
            Expr("cmp", {"sreg": 1, "op": op, "data": struct.pack(">H", port)})]  # fmt: skip


def saddr_in(prefix: bytes, length: int) -> list[Expr]:
    mask = (0xFFFFFFFF << (32 - length) & 0xFFFFFFFF).to_bytes(4, "big")
    return [Expr("payload", {"dreg": 1, "base": 1, "offset": 12, "len": 4}),
            Expr("bitwise", {"sreg": 1, "dreg": 1, "len": 4, "mask": mask, "xor": bytes(4)}),
            Expr("cmp", {"sreg": 1, "op": 0, "data": prefix})]  # fmt: skip


def dnat(address: bytes, port: int) -> list[Expr]:
    return [Expr("immediate", {"dreg": 1, "data": address}),
            Expr("immediate", {"dreg": 2, "data": struct.pack(">H", port)}),
            Expr("nat", {"type": 1, "family": 2, "addr_min": 1, "proto_min": 2})]  # fmt: skip


def redirect(port: int) -> list[Expr]:
    return [Expr("immediate", {"dreg": 1, "data": struct.pack(">H", port)}),
            Expr("redir", {"proto_min": 1})]  # fmt: skip


def verdict(code: str, chain: str | None = None) -> list[Expr]:
    return [Expr("immediate", {"dreg": 0, "data": Verdict(code, chain)})]


def ruleset(
    rules: dict[str, list[list[Expr]]],
    *,
    table: str = "t",
    hook: str = "prerouting",
    sets: tuple[NamedSet, ...] = (),
    comments: dict[tuple[str, int], str] | None = None,
) -> Ruleset:
    """RULES by chain; the first chain is the NAT base chain of HOOK."""
    chains, made, handle = [], [], 0
    for index, (name, chain_rules) in enumerate(rules.items()):
        base = index == 0
        chains.append(Chain("ip", table, name, index + 1, hook if base else None, -100,
                            "nat" if base else None, "accept" if base else None))  # fmt: skip
        for position, exprs in enumerate(chain_rules):
            handle += 1
            comment = (comments or {}).get((name, position))
            made.append(Rule("ip", table, name, handle, tuple(exprs), comment))
    return Ruleset(1, tuple(chains), tuple(made), sets)


def vmap(name: str, keys: dict[bytes, Verdict], key_len: int) -> NamedSet:
    return NamedSet("ip", "t", name, 0x8 | 0x1, key_len, 0,
                    elements=[Element(k, data=v) for k, v in keys.items()])  # fmt: skip

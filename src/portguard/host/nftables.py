"""The kernel's nftables ruleset, read over netlink (NETLINK_NETFILTER) with the stdlib alone.

Tables, chains, rules, sets and their elements, and the ruleset's generation number, in the
kernel's own terms: every rule's expressions with their attributes decoded, nothing judged.
iptables-nft's rules are here too (its matches and targets as `match`/`target` expressions
with the x_tables blob, decoded in host/xtables.py). Numbers from linux/netfilter/nf_tables.h.

Why not pyroute2's nftables module: its messages and their attributes differ between Debian
12's 0.7.2, Debian 13's 0.7.7 and PyPI's 0.9 (0.7.2 knows no set elements or verdict maps),
and the free path needs the generation number without any import beyond the stdlib. One
decoder of the few message shapes a dump returns serves both.
"""

import _socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from portguard.errors import PortguardError
from portguard.host.nftexprs import (
    VERDICTS,
    Expr,
    Verdict,
    data_of,
    expr_of,
    iter_attrs,
    parse_attrs,
    text,
    u32,
)

__all__ = ["Expr", "Verdict", "data_of", "iter_attrs", "parse_attrs"]

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_GETTABLE, _GETCHAIN, _GETRULE, _GETSET, _GETSETELEM, _GETGEN = 1, 4, 7, 10, 13, 16
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RECV_BYTES = 1 << 20
_TIMEOUT_S = 2.0
# Verdict codes (negative in the kernel's int32).
HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
SET_INTERVAL, SET_MAP = 0x4, 0x8
ELEM_INTERVAL_END = 0x1


class RulesetUnreadable(PortguardError):
    """The ruleset could not be read (no CAP_NET_ADMIN, no nf_tables, a broken reply)."""


@dataclass(frozen=True, slots=True)
class Chain:
    family: str
    table: str
    name: str
    handle: int
    hook: str | None = None
    priority: int = 0
    type: str | None = None  # filter, nat, route (base chains only)
    policy: str | None = None


class Rule:
    """A rule and its expressions, decoded from the kernel's bytes when first asked for: a
    kube-proxy node has tens of thousands of rules, and a judgement reaches a few of them."""

    __slots__ = ("_exprs", "_raw", "chain", "comment", "family", "handle", "table")

    def __init__(  # noqa: PLR0917 - the rule's own parts, in the kernel's order
        self, family: str, table: str, chain: str, handle: int,
        exprs: tuple[Expr, ...] | None = None, comment: str | None = None, raw: bytes = b"",
    ) -> None:  # fmt: skip
        self.family, self.table, self.chain, self.handle = family, table, chain, handle
        self.comment = comment
        self._exprs, self._raw = exprs, raw

    @property
    def exprs(self) -> tuple[Expr, ...]:
        if self._exprs is None:
            self._exprs = tuple(expr_of(raw) for kind, raw in iter_attrs(self._raw) if kind == 1)
        return self._exprs

    def __repr__(self) -> str:
        return f"Rule({self.family} {self.table} {self.chain} handle {self.handle})"


@dataclass(frozen=True, slots=True)
class Element:
    key: bytes
    key_end: bytes | None = None  # a concatenation's range (pipapo): the last key included
    interval_end: bool = False  # an interval set's (rbtree) end marker: the first key after
    data: bytes | Verdict | None = None


@dataclass(slots=True)
class NamedSet:
    family: str
    table: str
    name: str
    flags: int
    key_len: int
    data_len: int = 0
    field_lens: tuple[int, ...] = ()
    elements: list[Element] = field(default_factory=list)

    @property
    def is_map(self) -> bool:
        return bool(self.flags & SET_MAP)


@dataclass(frozen=True, slots=True)
class Ruleset:
    generation: int
    chains: tuple[Chain, ...]
    rules: tuple[Rule, ...]
    sets: tuple[NamedSet, ...]


def generation(sock: "_socket.socket | None" = None) -> int:
    """The ruleset's generation number: it changes with every committed change."""
    s = _open() if sock is None else sock
    try:
        for _family, attrs in _request(s, _GETGEN, 0, dump=False):
            return int.from_bytes(attrs[1][:4], "big")
    finally:
        if sock is None:
            s.close()
    raise RulesetUnreadable("the kernel sent no ruleset generation")


def read_ruleset() -> Ruleset:
    """The whole ruleset, read twice-checked: the generation before and after must agree."""
    s = _open()
    try:
        for _ in range(3):
            before = generation(s)
            chains = tuple(_chain(a, f) for f, a in _request(s, _GETCHAIN, 0, dump=True))
            rules = tuple(_rule(a, f) for f, a in _request(s, _GETRULE, 0, dump=True))
            sets = [_set(a, f) for f, a in _request(s, _GETSET, 0, dump=True)]
            for named in sets:
                named.elements = list(_elements(s, named))
            if generation(s) == before:
                return Ruleset(before, chains, rules, tuple(sets))
    finally:
        s.close()
    raise RulesetUnreadable("the ruleset kept changing while it was read")


def _open() -> "_socket.socket":
    try:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _NETLINK_NETFILTER)
        sock.settimeout(_TIMEOUT_S)
        sock.bind((0, 0))
    except OSError as exc:
        raise RulesetUnreadable(f"no netfilter netlink socket: {exc.strerror}") from None
    return sock


def _request(
    s: "_socket.socket",
    msg: int,
    family: int,
    *,
    dump: bool,
    attrs: bytes = b"",
) -> Iterator[tuple[str, dict[int, bytes]]]:
    kind = (_NFNL_SUBSYS_NFTABLES << 8) | msg
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
    body = struct.pack("=BBH", family, 0, 0) + attrs
    seq = 1
    s.send(struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body)
    try:
        yield from _replies(s)
    except TimeoutError:
        raise RulesetUnreadable("the kernel did not answer within 2 s") from None


def _replies(s: "_socket.socket") -> Iterator[tuple[str, dict[int, bytes]]]:
    while True:
        data = s.recv(_RECV_BYTES)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                raise RulesetUnreadable("a malformed netlink reply")
            payload = data[offset + 16 : offset + length]
            offset += (length + 3) & ~3
            if kind == _NLMSG_DONE:
                return
            if kind == _NLMSG_ERROR:
                errno = -struct.unpack_from("=i", payload)[0]
                if errno == 0:
                    return
                raise RulesetUnreadable(f"the kernel refused: {_strerror(errno)}")
            family = FAMILIES.get(payload[0], str(payload[0]))
            attrs = parse_attrs(payload[4:])
            yield family, attrs


def _strerror(errno: int) -> str:
    import os  # noqa: PLC0415 - only on the error path

    return os.strerror(errno)


def _chain(a: dict[int, bytes], family: str) -> Chain:
    hook = priority = None
    if 4 in a:
        h = parse_attrs(a[4])
        hook = HOOKS.get(u32(h[1]), str(u32(h[1]))) if 1 in h else None
        priority = struct.unpack(">i", h[2][:4])[0] if 2 in h else 0
    policy = VERDICTS.get(struct.unpack(">i", a[5][:4])[0]) if 5 in a else None
    return Chain(
        family,
        text(a.get(1, b"")),
        text(a.get(3, b"")),
        struct.unpack(">Q", a[2])[0] if 2 in a else 0,
        hook,
        priority or 0,
        text(a[7]) if 7 in a else None,
        policy,
    )


def _rule(a: dict[int, bytes], family: str) -> Rule:
    return Rule(
        family,
        text(a.get(1, b"")),
        text(a.get(2, b"")),
        int.from_bytes(a[3][:8], "big") if 3 in a else 0,
        comment=_comment(a[7]) if 7 in a else None,
        raw=a.get(4, b""),
    )


def _comment(userdata: bytes) -> str | None:
    """The rule's comment from its user data (libnftnl's TLV: type 0 is the comment)."""
    offset = 0
    while offset + 2 <= len(userdata):
        kind, length = userdata[offset], userdata[offset + 1]
        if kind == 0:
            return text(userdata[offset + 2 : offset + 2 + length])
        offset += 2 + length
    return None


def _set(a: dict[int, bytes], family: str) -> NamedSet:
    fields: tuple[int, ...] = ()
    if 9 in a:  # NFTA_SET_DESC → NFTA_SET_DESC_CONCAT (2) → NFTA_LIST_ELEM → FIELD_LEN (1)
        desc = parse_attrs(a[9])
        if 2 in desc:
            fields = tuple(
                u32(parse_attrs(raw).get(1, b"\0\0\0\0"))
                for kind, raw in iter_attrs(desc[2])
                if kind == 1
            )
    return NamedSet(
        family,
        text(a.get(1, b"")),
        text(a.get(2, b"")),
        u32(a[3]) if 3 in a else 0,
        u32(a[5]) if 5 in a else 0,
        u32(a[7]) if 7 in a else 0,
        fields,
    )


_FAMILY_NUMBERS = {name: number for number, name in FAMILIES.items()}


def _elements(s: "_socket.socket", named: NamedSet) -> Iterator[Element]:
    attrs = _attr(1, named.table.encode() + b"\0") + _attr(2, named.name.encode() + b"\0")
    family = _FAMILY_NUMBERS[named.family]
    for _family, reply in _request(s, _GETSETELEM, family, dump=True, attrs=attrs):
        for kind, raw in iter_attrs(reply.get(3, b"")):
            if kind != 1:
                continue
            e = parse_attrs(raw)
            key = data_of(e[1]) if 1 in e else b""
            end = data_of(e[10]) if 10 in e else None
            flags = u32(e[3]) if 3 in e else 0
            data = data_of(e[2]) if 2 in e else None
            yield Element(
                key if isinstance(key, bytes) else b"",
                end if isinstance(end, bytes) else None,
                bool(flags & ELEM_INTERVAL_END),
                data,
            )


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)

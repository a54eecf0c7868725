"""The matches of natflow.py's symbolic run: what one class of packets has in each field, and
which share of it each comparison, set lookup or iptables match takes. Pure.

A value is the tuple of every value the class's packets have in a field (each one occurs), or
None: any value at all. A comparison is then ALWAYS when every value passes, NEVER when none
does, else SOME; anything unknown is SOME, which can never make a redirect certain.
"""

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial
from itertools import product

from portguard.host import xtables
from portguard.host.nftables import Element, NamedSet

_RTN_LOCAL = 2
_PACKET_HOST = 0
_IFNAMSIZ = 16
# iptables matches that hold for some packets of any class: a random draw, a mark, a state...
_SOME_MATCHES = frozenset(
    [
        "statistic",
        "mark",
        "connmark",
        "conntrack",
        "state",
        "set",
        "physdev",
        "iprange",
        "recent",
        "hashlimit",
        "limit",
        "owner",
    ]
)

Value = tuple[bytes, ...] | None  # the values the class's packets have; None: any


class PortValue(bytes):
    """The destination port as loaded from the transport header: a decision on it is a
    decision on the port, which the run notes (PortWitness)."""


class PortWitness:
    """Every port the run's decisions single out. When the judged port was singled out by
    none of them, every other port outside `avoid` meets the same decisions and so the same
    verdict: one reading of the ruleset answers for them too (freepath/nat.py)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.avoid: list[tuple[int, int]] = []
        self.exact = True

    def saw(self, ranges: "list[tuple[int, int]]") -> None:
        """A decision that holds for the ports in RANGES (a superset is fine: sound)."""
        if any(lo <= self.port <= hi for lo, hi in ranges):
            self.exact = False  # the judged port itself: its verdict is its own
        self.avoid += ranges

    def lost(self) -> None:
        """A decision on the port that cannot be told as ranges (a masked port, a byte)."""
        self.exact = False

    def cmp(self, op: int, data: bytes) -> None:
        """The ports a comparison of the port with DATA singles out (eq, neq, lt, lte, gt, gte)."""
        if len(data) != 2:
            self.lost()
            return
        c = int.from_bytes(data, "big")
        ranges = {0: (c, c), 1: (c, c), 2: (0, c - 1), 3: (0, c), 4: (c + 1, 65535),
                  5: (c, 65535)}  # fmt: skip
        if op in ranges:
            self.saw([ranges[op]])
        else:
            self.lost()

    def lookup(self, named: NamedSet, fields: "list[tuple[Value, int]]") -> None:
        """A set or map keyed (in part) by the port: every port its elements name."""
        at = 0
        for value, size in fields:
            if value and any(isinstance(v, PortValue) for v in value):
                if size != 2:
                    self.lost()
                    return
                ends = [(e.key, e.key_end or e.key) for e in named.elements]
                self.saw([(int.from_bytes(lo[at : at + 2], "big"),
                                   int.from_bytes(hi[at : at + 2], "big"))
                                  for lo, hi in ends if len(lo) >= at + 2])  # fmt: skip
                if named.flags & 0x4 and not any(e.key_end for e in named.elements):
                    # An interval set: an element marks where a span starts or ends; the
                    # ports between are its too.
                    keys = sorted(int.from_bytes(e.key[:2], "big") for e in named.elements)
                    if keys:
                        self.saw([(keys[0], keys[-1])])
            at += (size + 3) // 4 * 4


class Share(Enum):
    NEVER = 0
    SOME = 1
    ALWAYS = 2


@dataclass(frozen=True, slots=True)
class Packets:
    """The class of packets judged: one destination, any source."""

    family: str  # "ip" or "ip6"
    hook: str  # "prerouting" (another host) or "output" (this host, for loopback)
    address: bytes
    proto: int  # 6 tcp, 17 udp
    port: int
    interfaces: tuple[tuple[int, str], ...]  # (index, name) it may come in on

    def payload(self, base: int, offset: int, size: int) -> Value:
        """What the class has at OFFSET of a header: the destination address, protocol, port."""
        p = self
        if base == 1:  # the network header
            if p.family == "ip":
                known = {9: bytes([p.proto]), 16: p.address}
            else:
                known = {6: bytes([p.proto]), 24: p.address}
        elif base == 2:  # the transport header
            known = {2: PortValue(struct.pack(">H", p.port))}
        else:
            return None
        for start, value in known.items():
            if (start, len(value)) == (offset, size):
                return (value,)  # whole, and a PortValue stays one
            if start <= offset and offset + size <= start + len(value):
                return (value[offset - start : offset - start + size],)
        return None

    def meta(self, key: int) -> tuple[Value, int]:
        """A `meta` key's values and size (linux/netfilter/nf_tables.h's NFT_META_*)."""
        p = self
        incoming = p.hook == "prerouting"
        # Another host's packets come in on any interface but loopback; this host's own
        # (the output hook, for a loopback claim) go out on lo.
        present = [(i, n) for i, n in p.interfaces if (n != "lo") == incoming]
        names = tuple(n.encode().ljust(_IFNAMSIZ, b"\0") for _i, n in present)
        indexes = tuple(struct.pack("=I", i) for i, _n in present)
        table: dict[int, tuple[Value, int]] = {
            16: ((bytes([p.proto]),), 1),  # l4proto
            15: ((bytes([2 if p.family == "ip" else 10]),), 1),  # nfproto
            1: ((b"\x08\x00" if p.family == "ip" else b"\x86\xdd",), 2),  # protocol
            6: ((names if incoming else None), _IFNAMSIZ),  # iifname
            4: ((indexes if incoming else None), 4),  # iif
            7: ((names if not incoming else None), _IFNAMSIZ),  # oifname
            5: ((indexes if not incoming else None), 4),  # oif
            19: ((bytes([_PACKET_HOST]),) if incoming else None, 1),  # pkttype
        }
        return table.get(key, (None, 16))

    def fib(self, result: int, flags: int) -> Value:
        if result == 3 and flags & ~0x20 == 0x2:  # the destination's type, on any interface
            return (struct.pack("=I", _RTN_LOCAL),)
        return None


def xt_share(
    packets: Packets, name: str, rev: int, info: bytes, witness: PortWitness | None = None
) -> Share | str | None:
    """An iptables match's share of PACKETS; None for a comment; a string: what is unknown."""
    if name == "comment":
        return None
    if name == "addrtype":
        found = xtables.addrtype(rev, info)
        if found is None:
            return f"addrtype revision {rev}"
        taken = Share.ALWAYS
        if found.dest and found.limit_in:
            taken = Share.SOME  # local on the interface it came in on: that depends
        elif found.dest:
            hit = bool(found.dest & xtables.ADDRTYPE_LOCAL)
            taken = Share.ALWAYS if hit != found.invert_dest else Share.NEVER
        return and_(taken, Share.SOME) if found.source else taken
    conditions = xtables.ports(name, rev, info)
    if conditions is not None:
        taken = Share.ALWAYS
        for c in conditions:
            if c.side == "source":
                full = c.ranges == ((0, 65535),)
                taken = and_(taken, Share.ALWAYS if full and not c.invert else Share.SOME)
                continue
            hit = any(lo <= packets.port <= hi for lo, hi in c.ranges)
            if witness is not None:
                witness.saw(list(c.ranges))
            if c.side == "either":
                taken = and_(taken, Share.ALWAYS if hit and not c.invert else Share.SOME)
            else:
                taken = and_(taken, Share.ALWAYS if hit != c.invert else Share.NEVER)
        return taken
    if name in _SOME_MATCHES:
        return Share.SOME
    return f"the iptables match '{name}'"


class Registers:
    """nftables' registers as 4-byte cells: 1-4 are 16 bytes (cells 0-15), 8-23 are 4."""

    def __init__(self) -> None:
        self.cells: dict[int, tuple[Value, int]] = {}

    @staticmethod
    def _cell(reg: object) -> int:
        number = reg if isinstance(reg, int) else 0
        return (number - 1) * 4 if number < 8 else number - 8

    def holds_port(self, reg: object) -> bool:
        """Whether REG starts with the destination port as loaded (a PortValue)."""
        value = self.cells.get(self._cell(reg), (None, 0))[0]
        return bool(value) and any(isinstance(v, PortValue) for v in value or ())

    def put(self, reg: object, value: Value, size: int) -> None:
        start = self._cell(reg)
        for cell in range(start, start + max(1, (size + 3) // 4)):
            self.cells.pop(cell, None)
        self.cells[start] = (value, size)

    def get(self, reg: object, size: int) -> Value:
        got = self.cells.get(self._cell(reg))
        if got is None:
            return None
        value, stored = got
        if value is None or stored >= size:
            return value if value is None else tuple(v[:size] for v in value)
        return joined(self.fields(reg, size), size)

    def fields(self, reg: object, size: int) -> list[tuple[Value, int]]:
        """The values a concatenation of SIZE bytes reads, each padded to 4 bytes."""
        out, cell, left = [], self._cell(reg), size
        while left > 0:
            value, stored = self.cells.get(cell, (None, min(left, 4)))
            padded = (stored + 3) // 4 * 4
            out.append((value, stored))
            cell += padded // 4
            left -= padded
        return out


def joined(fields: "list[tuple[Value, int]]", size: int | None = None) -> Value:
    """Every whole key the fields make: each field padded to 4 bytes, as the kernel lays a
    concatenation out, and the whole cut to SIZE (a one-field key of 2 bytes stays 2)."""
    if any(v is None for v, _ in fields):
        return None
    parts = [tuple(x.ljust((n + 3) // 4 * 4, b"\0") for x in v or ()) for v, n in fields]
    return tuple(b"".join(p)[:size] for p in product(*parts))


def element_tests(
    named: NamedSet, fields: "list[tuple[Value, int]]"
) -> list[tuple[Element, Callable[[bytes], bool]]]:
    """Each element with the test a whole key passes to fall in it; elements a known part
    of the key can never equal are left out."""
    tests: list[tuple[Element, Callable[[bytes], bool]]] = []
    if named.flags & 0x4 and not any(e.key_end for e in named.elements):
        for element, high in intervals(named.elements):
            low = element.key
            tests.append((element, partial(_in_interval, low, high)))
    else:
        for element in named.elements:
            if element.interval_end:
                continue
            if element.key_end is not None:
                low, end = element.key, element.key_end
                tests.append((element, partial(_in_box, low, end, fields)))
            else:
                tests.append((element, element.key.__eq__))
    if joined(fields, named.key_len) is None:
        tests = [(e, t) for e, t in tests if not concrete_miss(fields, e)]
    return tests


def _in_interval(low: bytes, high: bytes | None, key: bytes) -> bool:
    return low <= key and (high is None or key < high)


def _in_box(low: bytes, high: bytes, fields: "list[tuple[Value, int]]", key: bytes) -> bool:
    """Each field of KEY within its range (a concatenation's ranges are per field)."""
    at = 0
    for _v, n in fields:
        size = (n + 3) // 4 * 4
        if not low[at : at + size] <= key[at : at + size] <= high[at : at + size]:
            return False
        at += size
    return True


def concrete_miss(fields: "list[tuple[Value, int]]", element: Element) -> bool:
    """Whether a known part of a partly known key can never equal ELEMENT's part."""
    at = 0
    for value, n in fields:
        size = (n + 3) // 4 * 4
        if value is not None:
            low = element.key[at : at + size]
            high = (element.key_end or element.key)[at : at + size]
            if not any(low <= v.ljust(size, b"\0")[: len(low)] <= high for v in value):
                return True
        at += size
    return False


def intervals(elements: Sequence[Element]) -> list[tuple[Element, bytes | None]]:
    """An interval set's (rbtree) starts with the first key past each, from its markers."""
    ordered = sorted(elements, key=lambda e: e.key)
    spans: list[tuple[Element, bytes | None]] = []
    start: Element | None = None
    for e in ordered:
        if e.interval_end:
            if start is not None:
                spans.append((start, e.key))
                start = None
        else:
            if start is not None:
                spans.append((start, e.key))
            start = e
    if start is not None:
        spans.append((start, None))
    return spans


def union(
    tests: list[tuple[Element, Callable[[bytes], bool]]],
    fields: "list[tuple[Value, int]]",
    size: int,
) -> Share:
    """The share of the class whose key (SIZE bytes) falls in some element."""
    key = joined(fields, size)
    if key is None:
        return Share.SOME if tests else Share.NEVER
    return share(key, lambda k: any(test(k) for _e, test in tests))


def share(values: Value, test: Callable[[bytes], bool]) -> Share:
    if values is None:
        return Share.SOME
    hits = [test(v) for v in values]
    if all(hits):
        return Share.ALWAYS
    return Share.SOME if any(hits) else Share.NEVER


def cmp(values: Value, op: object, data: bytes) -> Share:
    tests: dict[int, Callable[[bytes], bool]] = {
        0: lambda v: v[: len(data)] == data,
        1: lambda v: v[: len(data)] != data,
        2: lambda v: v[: len(data)] < data,
        3: lambda v: v[: len(data)] <= data,
        4: lambda v: v[: len(data)] > data,
        5: lambda v: v[: len(data)] >= data,
    }
    test = tests.get(int(op))  # type: ignore[call-overload]
    return Share.SOME if test is None else share(values, test)


def bitwise(values: Value, a: dict[str, object]) -> Value:
    mask, xor = a.get("mask"), a.get("xor")
    if (
        values is None
        or a.get("op", 0) != 0
        or not isinstance(mask, bytes)
        or not isinstance(xor, bytes)
    ):
        return None
    return tuple(
        bytes((b & m) ^ x for b, m, x in zip(v.ljust(len(mask), b"\0"), mask, xor, strict=False))
        for v in values
    )


def first(values: Value) -> bytes | None:
    return values[0] if values and len(values) == 1 else None


def and_(a: Share, b: Share) -> Share:
    return Share(min(a.value, b.value))


def not_(share: Share) -> Share:
    return {Share.ALWAYS: Share.NEVER, Share.NEVER: Share.ALWAYS}.get(share, Share.SOME)

"""Which ports the NAT rules of a ruleset name: the ports worth judging when no claim says
which (`init`). Pure.

Every port a rule compares the transport header's destination port with, in a `cmp`, a
`range`, a set or map looked up with it (a concatenation's port field too: kube-proxy's
`meta l4proto . th dport` maps), or an iptables tcp/udp/multiport match. It lists candidates
only: natflow.py then judges each as for a claim.
"""

from collections.abc import Iterator

from portguard.host import xtables
from portguard.host.nftables import Expr, NamedSet, Rule, Ruleset

_DPORT = "dport"
# A range wider than this is not a service's port but a filter ("all high ports"): left out.
_WIDEST = 4096


def candidate_ports(ruleset: Ruleset) -> set[int]:
    sets = {(s.family, s.table, s.name): s for s in ruleset.sets}
    nat_tables = {(c.family, c.table) for c in ruleset.chains if c.type == "nat"}
    found: set[int] = set()
    for rule in ruleset.rules:
        if (rule.family, rule.table) in nat_tables:
            found.update(_rule_ports(rule, sets))
    return found


def _rule_ports(rule: Rule, sets: dict[tuple[str, str, str], NamedSet]) -> Iterator[int]:
    cells: dict[int, tuple[str, int]] = {}  # register cell → (what it holds, its size)
    for expr in rule.exprs:
        a = expr.attrs
        if expr.name == "payload" and "dreg" in a:
            held = _DPORT if (a.get("base"), a.get("offset"), a.get("len")) == (2, 2, 2) else ""
            cells[_cell(a["dreg"])] = (held, _int(a.get("len")))
        elif expr.name in ("meta", "ct", "fib", "numgen", "immediate", "bitwise") and "dreg" in a:
            cells[_cell(a["dreg"])] = ("", 4)
        elif expr.name == "cmp" and cells.get(_cell(a.get("sreg")), ("", 0))[0] == _DPORT:
            yield from _ports_of(a.get("data"))
        elif expr.name == "range" and cells.get(_cell(a.get("sreg")), ("", 0))[0] == _DPORT:
            yield from _span(a.get("from"), a.get("to"))
        elif expr.name == "lookup":
            named = sets.get((rule.family, rule.table, str(a.get("set"))))
            offset = _dport_offset(cells, _cell(a.get("sreg")), named)
            if named is not None and offset is not None:
                for e in named.elements:
                    yield from _span(e.key[offset : offset + 2],
                                     (e.key_end or e.key)[offset : offset + 2])  # fmt: skip
        elif expr.name == "match":
            yield from _xt_ports(expr)


def _dport_offset(
    cells: dict[int, tuple[str, int]], start: int, named: NamedSet | None
) -> int | None:
    """Where in the set's key the destination port lies, if the key holds it."""
    if named is None:
        return None
    offset, cell = 0, start
    while offset < named.key_len:
        held, size = cells.get(cell, ("", 4))
        if held == _DPORT:
            return offset
        padded = (size + 3) // 4 * 4
        offset += padded
        cell += padded // 4
    return None


def _xt_ports(expr: Expr) -> Iterator[int]:
    info = expr.attrs.get("info")
    conditions = xtables.ports(str(expr.attrs.get("name")), _int(expr.attrs.get("rev")),
                               info if isinstance(info, bytes) else b"")  # fmt: skip
    for condition in conditions or ():
        if condition.side != "source" and not condition.invert:
            for low, high in condition.ranges:
                if high - low < _WIDEST:
                    yield from range(low, high + 1)


def _ports_of(data: object) -> Iterator[int]:
    if isinstance(data, bytes) and len(data) >= 2:
        yield int.from_bytes(data[:2], "big")


def _span(low: object, high: object) -> Iterator[int]:
    if isinstance(low, bytes) and isinstance(high, bytes) and len(low) >= 2 and len(high) >= 2:
        first, last = int.from_bytes(low[:2], "big"), int.from_bytes(high[:2], "big")
        if 0 <= last - first < _WIDEST:
            yield from range(first, last + 1)


def _cell(reg: object) -> int:
    number = reg if isinstance(reg, int) else 0
    return (number - 1) * 4 if number < 8 else number - 8


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0

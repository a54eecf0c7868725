"""Where the NAT hooks send the packets another host sends to one address and port: pure.

The nftables ruleset (iptables-nft's rules included) is run symbolically, in the kernel's own
order (every NAT base chain of the hook by priority, each until a rule's verdict ends it), for
one class of packets: every packet whose destination is ADDRESS:PORT/PROTO, whatever its
source, source port, mark or which of the present interfaces it comes in on. A register holds
either the values the class's packets have (several where each occurs: the interfaces, a
random number's range) or ANY. Each match is then ALWAYS, NEVER or SOME of the class.

Only ALWAYS is ever taken as certain: a redirect is `certain` when every packet of the class
reaches it, and anything the reader does not know, or a match it cannot decide, counts as
SOME: it can turn a certain redirect into a partial one, never the other way round.
"""

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from portguard.host import xtables
from portguard.host.nftables import Chain, Element, Expr, Rule, Ruleset, Verdict
from portguard.policy.natmatch import (
    Packets,
    PortWitness,
    Registers,
    Share,
    and_,
    bitwise,
    cmp,
    element_tests,
    first,
    joined,
    not_,
    share,
    union,
    xt_share,
)

_MAX_DEPTH = 32
# The match expressions that hold for some packets and not others, whatever we know.
_SOME_OF_THEM = frozenset({"limit", "quota", "connlimit", "ct", "exthdr", "socket", "osf"})
# Statements that change or count the packet and let it go on.
_GOES_ON = frozenset({"counter", "log", "notrack", "dynset", "objref", "last", "queue"})


@dataclass(frozen=True, slots=True)
class Redirect:
    """A rule that takes (some of) the packets, and the way to it from the hook."""

    rule: Rule
    kind: str  # "dnat" or "redirect"
    address: bytes | None  # DNAT's new destination; None for REDIRECT or unknown
    port: int | None  # the new port; None where it stays
    path: tuple[Rule, ...] = ()  # the rules whose jumps led here, outermost first
    keys: tuple[str, ...] = ()  # names of verdict-map elements on the way


@dataclass(slots=True)
class Flow:
    """What one hook does to the class: a redirect all of it meets, others some of it meets."""

    certain: Redirect | None = None
    partial: list[Redirect] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    # For a class nothing takes: the ports that may fare otherwise (every other port fares
    # the same); None when that cannot be told.
    avoid: list[tuple[int, int]] | None = None


@dataclass(slots=True)
class _Result:
    end: str | None = None  # "redirect", "escape" (accept/drop), "return"; None: goes on
    redirect: Redirect | None = None
    sides: list[Redirect] = field(default_factory=list)
    side_escape: bool = False
    unknown: list[str] = field(default_factory=list)


Own = Callable[[Redirect], bool]


def flow(ruleset: Ruleset, packets: Packets, own: Own = lambda r: False) -> Flow:
    """What the NAT base chains of PACKETS' hook do to them, in priority order."""
    run = _Run(ruleset, packets, own)
    result = _flow(run)
    nothing = result.certain is None and not result.partial and not result.unknown
    if nothing and run.witness.exact:
        result.avoid = run.witness.avoid
    return result


def _flow(run: "_Run") -> Flow:
    result = Flow()
    escaped = False
    for chain in run.base_chains():
        res = run.chain(chain, (), (), 0)
        result.unknown += res.unknown
        result.partial += res.sides
        escaped = escaped or res.side_escape
        if res.end == "redirect" and res.redirect is not None:
            if escaped:
                result.partial.append(res.redirect)
            else:
                result.certain = res.redirect
            return result
        if res.end == "escape" and run.dropped:
            return result  # a drop: what is left reaches nothing
        if chain.policy == "drop":
            return result
    return result


class _Run:
    def __init__(self, ruleset: Ruleset, packets: Packets, own: Own) -> None:
        self.packets = packets
        self.own = own
        self.dropped = False
        self.rules: dict[tuple[str, str, str], list[Rule]] = {}
        for rule in ruleset.rules:
            self.rules.setdefault((rule.family, rule.table, rule.chain), []).append(rule)
        self.sets = {(s.family, s.table, s.name): s for s in ruleset.sets}
        self.all_chains = ruleset.chains
        self.witness = PortWitness(packets.port)

    def base_chains(self) -> list[Chain]:
        family = self.packets.family
        chosen = [
            c
            for c in self.all_chains
            if c.type == "nat" and c.hook == self.packets.hook and c.family in (family, "inet")
        ]
        return sorted(chosen, key=lambda c: c.priority)

    def chain(
        self, chain: Chain, path: tuple[Rule, ...], keys: tuple[str, ...], depth: int
    ) -> _Result:
        return self.named(chain.family, chain.table, chain.name, path, keys, depth)

    def named(  # noqa: PLR0917 - one step of the walk: its place and its way there
        self,
        family: str,
        table: str,
        name: str,
        path: tuple[Rule, ...],
        keys: tuple[str, ...],
        depth: int,
    ) -> _Result:
        out = _Result()
        if depth > _MAX_DEPTH:
            out.unknown.append(f"chain {name} is more than {_MAX_DEPTH} jumps deep")
            out.side_escape = True
            return out
        split = False
        for rule in self.rules.get((family, table, name), []):
            share, effect = self.rule(rule, path, keys, depth)
            out.unknown += effect.unknown
            out.sides += effect.sides
            out.side_escape = out.side_escape or effect.side_escape
            if share is Share.NEVER or effect.end is None:
                continue
            if share is Share.ALWAYS and not split:
                out.end, out.redirect = effect.end, effect.redirect
                return out
            if effect.end == "redirect" and effect.redirect is not None:
                out.sides.append(effect.redirect)
            elif effect.end == "escape":
                out.side_escape = True
            if share is Share.ALWAYS:
                return out  # what is left of the class returns to the caller
            split = split or effect.end == "return"
        return out

    def rule(
        self, rule: Rule, path: tuple[Rule, ...], keys: tuple[str, ...], depth: int
    ) -> tuple[Share, _Result]:
        regs = Registers()
        share = Share.ALWAYS
        effect = _Result()
        for expr in rule.exprs:
            got = self.expr(expr, regs, rule, path, keys, depth, effect)
            if isinstance(got, Share):
                share = and_(share, got)
                if share is Share.NEVER:
                    return share, _Result()
            elif got is not None:
                got.unknown = effect.unknown + got.unknown
                got.side_escape = got.side_escape or effect.side_escape
                return share, got
        return share, effect

    def expr(  # noqa: PLR0917, PLR0915 - one step of the walk: its place and its way there
        self,
        expr: Expr,
        regs: Registers,
        rule: Rule,
        path: tuple[Rule, ...],
        keys: tuple[str, ...],
        depth: int,
        effect: _Result,
    ) -> Share | _Result | None:
        """A match's share of the class, a verdict's result, or None for a statement."""
        a, name = expr.attrs, expr.name
        where = f"{rule.family} {rule.table} {rule.chain} (handle {rule.handle})"

        def n(key: str, default: int = 0) -> int:
            value = a.get(key, default)
            return value if isinstance(value, int) else default

        if name == "payload":
            if "sreg" in a:
                return None  # a rewrite of the packet: it goes on
            base, offset, size = n("base"), n("offset"), n("len")
            if base == 2 and offset < 4 < offset + size + 2 and (offset, size) != (2, 2):
                self.witness.lost()  # part of the port, or more than it
            regs.put(n("dreg"), self.packets.payload(base, offset, size), size)
            return None
        if name == "meta":
            if "dreg" in a:
                value, size = self.packets.meta(n("key"))
                regs.put(n("dreg"), value, size)
            return None
        if name == "fib":
            regs.put(n("dreg"), self.packets.fib(n("result"), n("flags")), 4)
            return None
        if name == "numgen":
            mod, off = n("modulus", 1), n("offset")
            regs.put(n("dreg"), tuple(struct.pack("=I", off + i) for i in range(mod)), 4)
            return None
        if name == "immediate":
            data = a.get("data")
            if isinstance(data, Verdict):
                return self.verdict(data, rule, path, keys, depth)
            if isinstance(data, bytes):
                regs.put(n("dreg"), (data,), len(data))
            return None
        if name == "bitwise":
            if regs.holds_port(n("sreg")):
                self.witness.lost()
            regs.put(n("dreg"), bitwise(regs.get(n("sreg"), n("len")), a), n("len"))
            return None
        if name == "cmp":
            data = a["data"]
            assert isinstance(data, bytes)
            if regs.holds_port(n("sreg")):
                self.witness.cmp(n("op"), data)
            return cmp(regs.get(n("sreg"), len(data)), n("op"), data)
        if name == "range":
            low, high = a["from"], a["to"]
            assert isinstance(low, bytes) and isinstance(high, bytes)
            if regs.holds_port(n("sreg")):
                if len(low) == 2:
                    self.witness.saw([(int.from_bytes(low, "big"), int.from_bytes(high, "big"))])
                else:
                    self.witness.lost()
            found = share(regs.get(n("sreg"), len(low)), lambda v: low <= v[: len(low)] <= high)
            return not_(found) if n("op") == 1 else found
        if name == "lookup":
            return self.lookup(a, regs, rule, path, keys, depth, where, effect)
        if name == "nat":
            if a.get("type") != 1:
                return _Result(end="escape")  # SNAT: no new destination
            size = 4 if self.packets.family == "ip" else 16
            address = first(regs.get(n("addr_min"), size)) if "addr_min" in a else None
            port = first(regs.get(n("proto_min"), 2)) if "proto_min" in a else None
            return self.redirect(rule, "dnat", address, port, path, keys)
        if name == "redir":
            port = first(regs.get(n("proto_min"), 2)) if "proto_min" in a else None
            return self.redirect(rule, "redirect", None, port, path, keys)
        if name == "masq":
            return _Result(end="escape")
        if name == "match":
            info = a.get("info", b"")
            taken = xt_share(self.packets, str(a.get("name")), n("rev"),
                             info if isinstance(info, bytes) else b"")  # fmt: skip
            if isinstance(taken, str):
                effect.unknown.append(f"{where}: {taken}")
                return Share.SOME
            return taken
        if name == "target":
            return self.xt_target(a, rule, path, keys, where, effect)
        if name in _GOES_ON:
            return None
        if name in _SOME_OF_THEM:
            if "dreg" in a:
                regs.put(n("dreg"), None, 16)
            return Share.SOME if name != "ct" else None
        effect.unknown.append(f"{where}: the expression '{name}'")
        return Share.SOME

    def redirect(  # noqa: PLR0917 - one step of the walk: its place and its way there
        self, rule: Rule, kind: str, address: bytes | None, port: bytes | int | None,
        path: tuple[Rule, ...], keys: tuple[str, ...],
    ) -> _Result:  # fmt: skip
        number = struct.unpack(">H", port[:2])[0] if isinstance(port, bytes) else port
        found = Redirect(rule, kind, address, number, path, keys)
        if self.own(found):
            # The unit's own plumbing; another unit's port the rule would take: no mark.
            self.witness.lost()
            return _Result(end="escape")
        return _Result(end="redirect", redirect=found)

    def verdict(
        self,
        verdict: Verdict,
        rule: Rule,
        path: tuple[Rule, ...],
        keys: tuple[str, ...],
        depth: int,
    ) -> _Result | None:
        code = verdict.code
        if code in ("accept", "drop", "queue", "stolen"):
            self.dropped = self.dropped or code == "drop"
            return _Result(end="escape")
        if code == "return":
            return _Result(end="return")
        if code in ("jump", "goto") and verdict.chain:
            sub = self.named(rule.family, rule.table, verdict.chain, (*path, rule), keys, depth + 1)
            if sub.end is None and code == "goto":
                sub.end = "return"
            elif sub.end == "return":
                sub.end = None
            return sub
        return None  # continue

    def lookup(  # noqa: PLR0917 - one step of the walk: its place and its way there
        self, a: dict[str, object], regs: Registers, rule: Rule, path: tuple[Rule, ...],
        keys: tuple[str, ...], depth: int, where: str, effect: _Result,
    ) -> Share | _Result | None:  # fmt: skip
        named = self.sets.get((rule.family, rule.table, str(a["set"])))
        if named is None:
            effect.unknown.append(f"{where}: set {a['set']} could not be read")
            effect.side_escape = True
            return Share.SOME
        sreg, dreg, flags = a.get("sreg"), a.get("dreg"), a.get("flags", 0)
        fields = regs.fields(sreg, named.key_len)
        self.witness.lookup(named, fields)
        tests = element_tests(named, fields)
        found = union(tests, fields, named.key_len)
        if "dreg" not in a:
            return not_(found) if isinstance(flags, int) and flags & 1 else found
        if dreg != 0:
            key = joined(fields, named.key_len)
            data = [e.data for e, t in tests if key and any(t(k) for k in key)]
            known = found is Share.ALWAYS and all(isinstance(d, bytes) for d in data)
            values = tuple(d for d in data if isinstance(d, bytes)) if known else None
            regs.put(dreg, values, 16)
            return found
        key = joined(fields, named.key_len)
        matched = [
            (e, Share.ALWAYS if key and all(t(k) for k in key) else Share.SOME)
            for e, t in tests
            if key is None or any(t(k) for k in key)
        ]
        return self.verdict_map(matched, found, rule, path, keys, depth)

    def verdict_map(  # noqa: PLR0917 - one step of the walk: its place and its way there
        self, matches: list[tuple[Element, Share]], every_key: Share, rule: Rule,
        path: tuple[Rule, ...], keys: tuple[str, ...], depth: int,
    ) -> _Result:  # fmt: skip
        out = _Result()
        branches: list[_Result] = []
        for element, _share in matches:
            if not isinstance(element.data, Verdict):
                continue
            label = element.data.chain or element.data.code
            res = self.verdict(element.data, rule, path, (*keys, label), depth) or _Result()
            branches.append(res)
            out.unknown += res.unknown
            out.sides += res.sides
            out.side_escape = out.side_escape or res.side_escape
        every = every_key is Share.ALWAYS and bool(branches)
        if every and all(b.end == "redirect" for b in branches):
            out.end, out.redirect = "redirect", branches[0].redirect
            return out
        for b in branches:
            if b.end == "redirect" and b.redirect is not None:
                out.sides.append(b.redirect)
            elif b.end == "escape":
                out.side_escape = True
        if every and all(b.end in ("redirect", "escape") for b in branches):
            out.end = "escape"
        return out

    def xt_target(  # noqa: PLR0917 - one step of the walk: its place and its way there
        self, a: dict[str, object], rule: Rule, path: tuple[Rule, ...], keys: tuple[str, ...],
        where: str, effect: _Result,
    ) -> _Result | None:  # fmt: skip
        name, rev, info = str(a["name"]), int(a.get("rev", 0)), a.get("info", b"")  # type: ignore[call-overload]
        assert isinstance(info, bytes)
        if name in xtables.GOES_ON:
            return None
        if name in xtables.ENDS_HERE:
            return _Result(end="escape")
        if name in ("DNAT", "REDIRECT"):
            to = xtables.nat_to(name, rev, rule.family, info)
            if to is not None:
                kind = "dnat" if name == "DNAT" else "redirect"
                return self.redirect(rule, kind, to.address, to.first_port, path, keys)
        effect.unknown.append(f"{where}: the iptables target '{name}'")
        effect.side_escape = True
        return None

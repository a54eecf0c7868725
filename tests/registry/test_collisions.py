"""collisions(): the overlap graph's components per rule, against a check of every pair, and
its cost on registries built to be pathological (issue 24)."""

import ipaddress
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portguard.registry import collisions as module
from portguard.registry.claims import Claim, Proto, overlaps, shares
from portguard.registry.collisions import LIMIT, Collisions, Placed, Rule, collisions
from portguard.registry.entries import Mode, UnitEntry
from portguard.registry.findings import Location
from tests.registry.test_lint import components

UNITS = [f"u{n}.service" for n in range(5)]
_ADDRESSES = [None, "0.0.0.0", "127.0.0.1", "127.0.0.2", "::", "::1", "::ffff:127.0.0.1",
              "::ffff:0.0.0.0", "2001:db8::1"]  # fmt: skip


def entry(name: str) -> UnitEntry:
    return UnitEntry(name, Location("registry.yaml"), (), 0, Mode.ENFORCE)


@st.composite
def claims(draw: st.DrawFn) -> Claim:
    first = draw(st.integers(80, 90))
    last = draw(st.integers(first, 92))
    text = draw(st.sampled_from(_ADDRESSES))
    address = None if text is None else ipaddress.ip_address(text)
    v6only = draw(st.booleans()) and address is not None and address.version == 6
    if v6only and address is not None and address.ipv4_mapped is not None:
        v6only = False  # lint refuses a mapped address with v6only
    proto = draw(st.sampled_from(list(Proto)))
    share = draw(st.booleans())
    return Claim(proto, first, last, address, v6only, reuseaddr=share, reuseport=share and
                 draw(st.booleans()))  # fmt: skip


def symmetric(pairs: list[tuple[str, str]]) -> dict[str, frozenset[str]]:
    related: dict[str, set[str]] = {}
    for a, b in pairs:
        related.setdefault(a, set()).add(b)
        related.setdefault(b, set()).add(a)
    return {name: frozenset(units) for name, units in related.items()}


@settings(max_examples=500)
@given(
    st.lists(st.tuples(st.sampled_from(UNITS), claims()), max_size=25),
    st.lists(st.tuples(st.sampled_from(UNITS), st.sampled_from(UNITS)), max_size=4),
)
def test_components_are_those_of_every_pair(
    owned: list[tuple[str, Claim]], via_pairs: list[tuple[str, str]]
) -> None:
    """Same unit: overlap-self; via either way: nothing; both sharing: share; else overlap."""
    via = symmetric(via_pairs)
    placed = [Placed(claim, entry(unit), None, order)  # type: ignore[arg-type]
              for order, (unit, claim) in enumerate(owned)]  # fmt: skip
    edges: dict[Rule, list[tuple[int, int]]] = {rule: [] for rule in Rule}
    for i, j in itertools.combinations(range(len(placed)), 2):
        (unit_a, a), (unit_b, b) = owned[i], owned[j]
        if not overlaps(a, b) or (unit_a != unit_b and unit_b in via.get(unit_a, ())):
            continue
        rule = Rule.SELF if unit_a == unit_b else Rule.SHARE if shares(a, b) else Rule.OVERLAP
        edges[rule].append((i, j))
    found = collisions(placed, via)
    assert found.stopped_at is None
    for rule, pairs in edges.items():
        want = sorted(sorted(group) for group in components(pairs))
        got = sorted([p.order for p in c.members] for c in found.components if c.rule is rule)
        assert got == want, rule


def tcp(port: int, address: str | None = None, *, last: int | None = None) -> Claim:
    ip = None if address is None else ipaddress.ip_address(address)
    return Claim(Proto.TCP, port, last or port, ip)


def place(owned: list[tuple[str, Claim]]) -> list[Placed]:
    return [Placed(claim, entry(unit), None, order)  # type: ignore[arg-type]
            for order, (unit, claim) in enumerate(owned)]  # fmt: skip


@dataclass
class Work:
    """What collisions() did: claims compared, and cells joined."""

    compared: int = 0
    joined: int = 0


def counted(
    monkeypatch: pytest.MonkeyPatch,
    placed: list[Placed],
    via: dict[str, frozenset[str]] | None = None,
) -> tuple[Collisions, Work]:
    """collisions() with its comparisons and joins counted: its cost, in steps, not seconds
    (the seconds are bench/bench.py's)."""
    work = Work()
    compare, join = module.overlaps, module._Forest.join

    def overlaps(a: Claim, b: Claim) -> bool:
        work.compared += 1
        return compare(a, b)

    def joining(forest: module._Forest, a: int, b: int) -> None:
        work.joined += 1
        join(forest, a, b)

    monkeypatch.setattr(module, "overlaps", overlaps)
    monkeypatch.setattr(module._Forest, "join", joining)
    return collisions(placed, via or {}), work


def test_twenty_thousand_units_on_one_port_are_one_component(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 million pairs, one mistake: one component of every claim, with no comparison (one
    class) and a join per unit."""
    found, work = counted(monkeypatch, place([(f"u{n}.service", tcp(8080)) for n in range(20_000)]))
    [component] = found.components
    assert (component.rule, len(component.members)) == (Rule.OVERLAP, 20_000)
    assert (work.compared, work.joined) == (0, 19_999)


def test_a_big_group_meeting_many_small_ones_stays_linear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 units on the wildcard and 2,000 on addresses of their own: every address class
    meets the big class once, which is joined once and then needs one partner per meeting."""
    owned = [(f"w{n}.service", tcp(8080)) for n in range(20_000)]
    owned += [(f"a{n}.service", tcp(8080, f"10.0.{n // 250}.{n % 250 + 1}")) for n in range(2_000)]
    found, work = counted(monkeypatch, place(owned))
    assert [len(c.members) for c in found.components] == [22_000]
    assert work.compared == 2_000
    assert work.joined == 19_999 + 2_000


def test_via_exemptions_split_a_group_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket unit and its service on one port, and a third unit: all three are one group
    only through the third, which is no exemption of either."""
    owned = [("web.socket", tcp(80)), ("web.service", tcp(80)), ("other.service", tcp(80))]
    via = {"web.socket": frozenset({"web.service"}), "web.service": frozenset({"web.socket"})}
    found, _ = counted(monkeypatch, place(owned), via)
    assert [(c.rule, [p.unit.name for p in c.members]) for c in found.components] == [
        (Rule.OVERLAP, ["web.socket", "web.service", "other.service"]),
    ]  # fmt: skip
    found, _ = counted(monkeypatch, place(owned[:2]), via)
    assert found.components == []


def test_a_registry_too_tangled_to_judge_stops_at_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of different ranges over one another: distinct classes that all collide
    cannot be compressed, so the search stops past LIMIT pairs and says where."""
    owned = [(f"u{n}.service", tcp(1000 + n, last=60000)) for n in range(2_000)]
    found, work = counted(monkeypatch, place(owned))
    assert LIMIT < 2_000 * 1_999 // 2
    assert found.stopped_at is not None
    # The sweep meets u0, u1, ... in turn, each colliding with every one before it.
    last = next(k for k in itertools.count() if k * (k + 1) // 2 > LIMIT)
    assert found.stopped_at.unit.name == f"u{last}.service"
    assert work.compared == (last - 1) * last // 2 <= LIMIT


def test_what_compresses_never_reaches_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 units on one identical range: one class, nothing to compare."""
    owned = [(f"u{n}.service", tcp(1000, last=60000)) for n in range(5_000)]
    found, work = counted(monkeypatch, place(owned))
    assert found.stopped_at is None
    assert [len(c.members) for c in found.components] == [5_000]
    assert work.compared == 0

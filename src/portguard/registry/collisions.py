"""Which claims of a registry collide, grouped: the overlap graph's connected components.

Pure. Lint reports one finding per component and rule, not one per pair: 20,000 units on one
port are 200 million pairs but one mistake, and a template that renders one port for every
host role produces exactly that. Overlap is not transitive (a wildcard overlaps 127.0.0.1
and 10.0.0.1, which do not overlap each other), so a component is the claims joined by a
chain of collisions.

The work stays near-linear in the claims. Claims that collide alike (the same protocol,
ports, reach and sharing options) form one class; only classes are swept against each
other. Within a class, a unit's claims form one cell; two cells of colliding classes are
joined unless they are the same unit (rule overlap-self instead) or one lists the other in
`via`, so cells are joined by a search over the complement of those few exemptions. More
than LIMIT pairs of distinct colliding classes (thousands of different ranges over one
another) end the search with `stopped_at`: such a registry is refused, not judged.
"""

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from portguard.registry.claims import Claim, Reach, overlaps, reach, shares
from portguard.registry.entries import Listen, UnitEntry

# Pairs of distinct colliding classes searched before giving up (about 0.05 s). A valid
# registry has a handful: identical claims are one class whoever holds them, and claims that
# differ may only collide through `via` or the sharing options; thousands come from
# generated ranges.
LIMIT = 20_000


class Rule(StrEnum):
    """What a collision is, by who holds the two claims and with which options."""

    OVERLAP = "overlap"  # two units: the second bind fails (an error)
    SHARE = "share"  # two units that both set the sharing option: both bind (a warning)
    SELF = "overlap-self"  # one unit's own claims: its second bind fails (a warning)


@dataclass(frozen=True, slots=True)
class Placed:
    """A concrete claim with the unit and listen entry it comes from."""

    claim: Claim
    unit: UnitEntry
    listen: Listen
    order: int  # position in the registry's reading order


@dataclass(frozen=True, slots=True)
class Component:
    """Claims joined by collisions of one rule, in reading order (two at least)."""

    rule: Rule
    members: tuple[Placed, ...]


@dataclass
class Collisions:
    components: list[Component]
    stopped_at: Placed | None = None  # where LIMIT was reached; components are then partial


@dataclass(slots=True)
class _Cell:
    """One unit's claims within one class: all collide alike."""

    id: int
    unit: str
    members: list[Placed]


@dataclass(slots=True)
class _Class:
    claim: Claim  # the first member's; the others differ in nothing that collides
    order: int
    cells: dict[str, _Cell] = field(default_factory=dict)
    # The rules under which every cell of this class is already joined in one component.
    joined: set[Rule] = field(default_factory=set)


class _Forest:
    """Union-find over cell ids, one per rule; remembers which cells collided at all."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def root(self, cell: int) -> int:
        parent = self.parent
        parent.setdefault(cell, cell)
        while parent[cell] != cell:
            parent[cell] = parent[parent[cell]]
            cell = parent[cell]
        return cell

    def join(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def collisions(placed: Iterable[Placed], via: Mapping[str, frozenset[str]]) -> Collisions:
    """Every component of colliding claims. VIA: for each unit, the units that may hold its
    ports or whose ports it may hold (both directions); their collisions are no finding."""
    classes, cells = _classes(placed)
    forests = {rule: _Forest() for rule in Rule}
    for kind in classes:
        _within(kind, via, forests)
    stopped_at = None
    try:
        for a, b in _colliding_classes(classes):
            _between(a, b, via, forests)
    except _Tangled as tangled:
        stopped_at = next(iter(tangled.at.cells.values())).members[0]
    components = []
    for rule, forest in forests.items():
        groups: dict[int, list[Placed]] = {}
        for cell_id in forest.parent:
            groups.setdefault(forest.root(cell_id), []).extend(cells[cell_id].members)
        for members in groups.values():
            if len(members) > 1:
                members.sort(key=lambda p: p.order)
                components.append(Component(rule, tuple(members)))
    components.sort(key=lambda c: c.members[0].order)
    return Collisions(components, stopped_at)


def _classes(placed: Iterable[Placed]) -> tuple[list[_Class], list[_Cell]]:
    by_key: dict[tuple[object, ...], _Class] = {}
    cells: list[_Cell] = []
    for item in placed:
        claim = item.claim
        key = (claim.proto, claim.first, claim.last, reach(claim), claim.reuseaddr,
               claim.reuseport)  # fmt: skip
        kind = by_key.get(key)
        if kind is None:
            kind = by_key[key] = _Class(claim, len(by_key))
        cell = kind.cells.get(item.unit.name)
        if cell is None:
            cell = kind.cells[item.unit.name] = _Cell(len(cells), item.unit.name, [])
            cells.append(cell)
        cell.members.append(item)
    return list(by_key.values()), cells


def _rule(a: Claim, b: Claim) -> Rule:
    return Rule.SHARE if shares(a, b) else Rule.OVERLAP


def _within(kind: _Class, via: Mapping[str, frozenset[str]], forests: dict[Rule, _Forest]) -> None:
    """A class collides with itself: a unit's several claims in it, and every two units."""
    for cell in kind.cells.values():
        if len(cell.members) > 1:
            forests[Rule.SELF].root(cell.id)  # its members collide: a component of one cell
    if len(kind.cells) == 1:
        kind.joined.update(Rule)  # one cell is one component under every rule
        return
    rule = _rule(kind.claim, kind.claim)
    if _complement([*kind.cells.values()], None, via, forests[rule]):
        kind.joined.add(rule)


def _between(
    a: _Class, b: _Class, via: Mapping[str, frozenset[str]], forests: dict[Rule, _Forest]
) -> None:
    """Two colliding classes: the same unit's cells across them, and every two units."""
    small, large = (a, b) if len(a.cells) <= len(b.cells) else (b, a)
    for unit, cell in small.cells.items():
        other = large.cells.get(unit)
        if other is not None:
            forests[Rule.SELF].join(cell.id, other.id)
    rule = _rule(a.claim, b.claim)
    forest = forests[rule]
    if rule in large.joined:
        # Its cells are one component already: each cell of the other class needs one
        # partner in it that it may collide with, not all of them.
        for cell in small.cells.values():
            exempt = via.get(cell.unit, frozenset())
            for partner in large.cells.values():
                if partner.unit != cell.unit and partner.unit not in exempt:
                    forest.join(cell.id, partner.id)
                    break
        return
    if _complement([*a.cells.values()], [*b.cells.values()], via, forest):
        a.joined.add(rule)
        b.joined.add(rule)


def _complement(
    left: list[_Cell], right: list[_Cell] | None, via: Mapping[str, frozenset[str]],
    forest: _Forest,
) -> bool:  # fmt: skip
    """Join every two cells, one of LEFT and one of RIGHT (or any two of LEFT when RIGHT is
    None), of different units neither of which lists the other in `via`: a search over the
    complement of those exemptions, so it costs the cells plus the exemptions it meets. True
    when that leaves every cell in one component."""
    pools = [{c.id: c for c in left}] + ([{c.id: c for c in right}] if right is not None else [])
    components = 0
    for side in range(len(pools)):
        while pools[side]:
            _, start = pools[side].popitem()
            components += 1
            queue = [(start, side)]
            while queue:
                cell, at = queue.pop()
                across = 1 - at if right is not None else 0
                exempt = via.get(cell.unit, frozenset())
                kept = {}
                for cell_id, candidate in pools[across].items():
                    if candidate.unit == cell.unit or candidate.unit in exempt:
                        kept[cell_id] = candidate
                    else:
                        forest.join(cell.id, cell_id)
                        queue.append((candidate, across))
                pools[across] = kept
    return components == 1


class _Tangled(Exception):
    """More than LIMIT pairs of distinct classes collide; AT is the class the sweep was at."""

    def __init__(self, at: _Class) -> None:
        self.at = at


def _colliding_classes(classes: list[_Class]) -> Iterator[tuple[_Class, _Class]]:
    """Pairs of distinct classes that collide, by a sweep over port ranges rather than every
    pair: the classes still open at a port are indexed by what they reach, so a class meets
    only those on its own address or a wildcard of its family (5,000 units on 127.0.0.N:8080
    compare nothing), and every candidate is confirmed by `overlaps`. Past LIMIT candidates
    it raises _Tangled."""
    ordered = sorted(classes, key=lambda c: (c.claim.proto, c.claim.first))
    ending: list[tuple[int, int]] = []  # (last port, order) of the open classes: a heap
    opened: dict[int, _Class] = {}
    by_family: dict[int, dict[int, _Class]] = {4: {}, 6: {}}
    wildcards: dict[int, dict[int, _Class]] = {4: {}, 6: {}}
    by_address: dict[Reach, dict[int, _Class]] = {}
    proto = None
    compared = 0
    for current in ordered:
        claim = current.claim
        if claim.proto != proto:  # TCP and UDP never collide: start afresh
            proto = claim.proto
            ending, opened = [], {}
            by_family, wildcards, by_address = {4: {}, 6: {}}, {4: {}, 6: {}}, {}
        while ending and ending[0][0] < claim.first:
            gone = opened.pop(heapq.heappop(ending)[1])
            for family, address in reach(gone.claim):
                by_family[family].pop(gone.order, None)
                place = wildcards[family] if address is None else by_address[(family, address)]
                place.pop(gone.order, None)
        candidates: dict[int, _Class] = {}
        for family, address in reach(claim):
            if address is None:
                candidates.update(by_family[family])
            else:
                candidates.update(wildcards[family])
                candidates.update(by_address.get((family, address), {}))
        compared += len(candidates)
        if compared > LIMIT:
            raise _Tangled(current)
        for earlier in candidates.values():
            if overlaps(earlier.claim, claim):
                yield (earlier, current) if earlier.order < current.order else (current, earlier)
        opened[current.order] = current
        heapq.heappush(ending, (claim.last, current.order))
        for family, address in reach(claim):
            by_family[family][current.order] = current
            if address is None:
                wildcards[family][current.order] = current
            else:
                by_address.setdefault((family, address), {})[current.order] = current

"""Port sets in the kernel's list syntax and the ephemeral range as values: PortSet, LocalPorts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portguard.registry.localports import LocalPorts, PortSet


@pytest.mark.parametrize(
    ("ranges", "merged"),
    [
        ([], ()),
        ([(5, 5)], ((5, 5),)),
        ([(10, 20), (1, 3)], ((1, 3), (10, 20))),
        ([(1, 5), (3, 8)], ((1, 8),)),  # overlapping
        ([(1, 5), (6, 8)], ((1, 8),)),  # adjacent
        ([(1, 10), (2, 3)], ((1, 10),)),  # contained
        ([(1, 2), (4, 5)], ((1, 2), (4, 5))),  # a gap of one port stays
    ],
)
def test_of_normalises(ranges: list[tuple[int, int]], merged: tuple[tuple[int, int], ...]) -> None:
    assert PortSet.of(ranges).ranges == merged


@pytest.mark.parametrize(
    ("text", "ranges", "shown"),
    [
        ("", (), ""),
        ("\n", (), ""),
        ("8080\n", ((8080, 8080),), "8080"),
        ("8080,9000-9010", ((8080, 8080), (9000, 9010)), "8080,9000-9010"),
        (" 9000-9010 , 8080 ,", ((8080, 8080), (9000, 9010)), "8080,9000-9010"),
        ("1-3,4-6", ((1, 6),), "1-6"),
    ],
)
def test_parse_and_str(text: str, ranges: tuple[tuple[int, int], ...], shown: str) -> None:
    parsed = PortSet.parse(text)
    assert parsed.ranges == ranges
    assert str(parsed) == shown


def test_union() -> None:
    assert PortSet.parse("1-3,10") | PortSet.parse("4,9") == PortSet.parse("1-4,9-10")


@pytest.mark.parametrize(
    ("reserved", "first", "last", "missing"),
    [
        ("", 10, 20, "10-20"),
        ("10-20", 10, 20, ""),
        ("12,15-16", 10, 20, "10-11,13-14,17-20"),
        ("5-12,18-30", 10, 20, "13-17"),
        ("1-9,21-30", 10, 20, "10-20"),
        ("20", 20, 20, ""),
        ("20", 21, 21, "21"),
    ],
)
def test_missing(reserved: str, first: int, last: int, missing: str) -> None:
    assert str(PortSet.parse(reserved).missing(first, last)) == missing


def test_unprotected_is_limited_to_the_ephemeral_range() -> None:
    local = LocalPorts((32768, 60999), PortSet.parse("40000-40010"))
    assert str(local.unprotected(32760, 32770)) == "32768-32770"
    assert str(local.unprotected(39990, 40020)) == "39990-39999,40011-40020"
    assert str(local.unprotected(40000, 40010)) == ""
    assert str(local.unprotected(8080, 8080)) == ""
    assert str(local.unprotected(60990, 61010)) == "60990-60999"


# --- properties ----------------------------------------------------------------------------

PORT = st.integers(1, 300)
RANGES = st.lists(st.tuples(PORT, PORT).map(sorted).map(tuple), max_size=8)


def _ports(ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> set[int]:
    return {p for a, b in ranges for p in range(a, b + 1)}


@given(RANGES)
def test_of_is_sorted_disjoint_and_keeps_every_port(ranges: list[tuple[int, int]]) -> None:
    ps = PortSet.of(ranges)
    assert _ports(ps.ranges) == _ports(ranges)
    for (_, b), (c, _) in zip(ps.ranges, ps.ranges[1:], strict=False):
        assert b + 1 < c  # sorted, disjoint and not adjacent


@given(RANGES)
def test_parse_of_str_round_trips(ranges: list[tuple[int, int]]) -> None:
    ps = PortSet.of(ranges)
    assert PortSet.parse(str(ps)) == ps


@given(RANGES, PORT, PORT)
def test_missing_matches_a_set_oracle(ranges: list[tuple[int, int]], a: int, b: int) -> None:
    first, last = min(a, b), max(a, b)
    missing = PortSet.of(ranges).missing(first, last)
    assert _ports(missing.ranges) == set(range(first, last + 1)) - _ports(ranges)
    assert missing == PortSet.of(list(missing.ranges))  # itself normalised


@given(RANGES, RANGES)
def test_union_matches_a_set_oracle(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    assert _ports((PortSet.of(a) | PortSet.of(b)).ranges) == _ports(a) | _ports(b)


@given(st.tuples(PORT, PORT).map(sorted), RANGES, PORT, PORT)
def test_unprotected_matches_a_set_oracle(
    ephemeral: list[int], reserved: list[tuple[int, int]], a: int, b: int
) -> None:
    first, last = min(a, b), max(a, b)
    local = LocalPorts((ephemeral[0], ephemeral[1]), PortSet.of(reserved))
    expected = (set(range(first, last + 1)) & set(range(ephemeral[0], ephemeral[1] + 1))) - _ports(
        reserved
    )
    assert _ports(local.unprotected(first, last).ranges) == expected

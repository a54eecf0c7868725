"""systemd time spans for `wait`: parse_timespan_ms and format_ms."""

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portguard.registry.timespan import TimespanError, format_ms, parse_timespan_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("500msec", 500),
        ("10s", 10_000),
        ("10sec", 10_000),
        ("10 seconds", 10_000),
        ("1second", 1_000),
        ("1min 30s", 90_000),
        ("1 min 30 s", 90_000),
        ("1min30s", 90_000),
        ("1min30", 90_000),  # a last number without unit is seconds
        ("2m", 120_000),  # m is minutes in systemd, not months
        ("1minute", 60_000),
        ("3minutes", 180_000),
        ("1h", 3_600_000),
        ("1hr", 3_600_000),
        ("2hours", 7_200_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("10", 10_000),  # a bare number is seconds
        ("0", 0),
        ("1.5", 1_500),
        ("1.5s", 1_500),
        (".5s", 500),
        ("1.", 1_000),
        ("  10s  ", 10_000),
        ("1us", 1),  # rounded up to a whole millisecond: never zero
        ("1500usec", 2),
        ("1000µs", 1),  # MICRO SIGN
        ("2000μs", 2),  # GREEK SMALL LETTER MU
        ("1.0001s", 1_001),
        ("30000000w", 30_000_000 * 604_800_000),
    ],
)
def test_parse(text: str, ms: int) -> None:
    assert parse_timespan_ms(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a time span such as 500ms, 10s or 1min"),
        ("   ", "expected a time span"),
        ("infinity", "the wait must be finite"),
        (" infinity ", "the wait must be finite"),
        ("5 parsecs", "unknown time unit 'parsecs' in '5 parsecs' (expected us, ms, s, min"),
        ("10S", "unknown time unit 'S'"),
        ("1M", "unknown time unit 'M'"),
        ("1e3s", "unknown time unit 'e'"),
        ("s", "'s' is not a time span (expected e.g. 500ms, 10s, 1min 30s)"),
        ("-1s", "'-1s' is not a time span"),
        ("10s!", "'10s!' is not a time span"),
        ("1,5s", "'1,5s' is not a time span"),
        ("\u0661s", "'\u0661s' is not a time span"),  # ARABIC-INDIC DIGIT ONE: ASCII only
        ("31000000w", "'31000000w' is too long"),  # beyond systemd's 64-bit microseconds
        ("9" * 5000, "is too long"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(TimespanError) as caught:
        parse_timespan_ms(text)
    assert message in str(caught.value)


@given(st.integers(0, 10**9), st.sampled_from([("ms", 1), ("s", 1000), ("min", 60_000)]))
def test_whole_numbers_of_a_unit(n: int, unit: tuple[str, int]) -> None:
    assert parse_timespan_ms(f"{n}{unit[0]}") == n * unit[1]


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.sampled_from(["ms", "s", "min", "h"])),
        min_size=1,
        max_size=4,
    )
)
def test_components_add_up(parts: list[tuple[int, str]]) -> None:
    factor = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
    text = " ".join(f"{n}{unit}" for n, unit in parts)
    assert parse_timespan_ms(text) == sum(n * factor[unit] for n, unit in parts)


@given(st.text(max_size=30))
def test_parse_raises_only_timespan_errors(text: str) -> None:
    try:
        ms = parse_timespan_ms(text)
    except TimespanError as exc:
        assert str(exc)
        return
    assert ms >= 0


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (250, "250ms"),
        (999, "999ms"),
        (1_000, "1s"),
        (1_500, "1.5s"),
        (10_000, "10s"),
        (90_000, "90s"),
    ],
)
def test_format_ms(ms: int, text: str) -> None:
    assert format_ms(ms) == text


@given(
    st.integers(0, 10**6),
    st.text("0123456789", max_size=20),
    st.sampled_from(
        [("us", 1), ("ms", 1_000), ("s", 1_000_000), ("min", 60_000_000), ("w", 604_800_000_000)]
    ),
)
def test_a_fraction_is_exact(whole: int, fraction: str, unit: tuple[str, int]) -> None:
    """Fractions in exact integers (no float, no decimal context): the microseconds are the
    true value's floor, as systemd truncates them; then milliseconds are rounded up."""
    text = f"{whole}.{fraction}{unit[0]}"
    usec = Fraction(f"{whole}.{fraction or 0}") * unit[1]
    assert parse_timespan_ms(text) == -(-math.floor(usec) // 1_000)

"""systemd time spans (systemd.time(7)): `500ms`, `10s`, `1min 30s`, a bare number is seconds."""

import re

from portguard.errors import InvalidValue

_USEC = {
    "usec": 1,
    "us": 1,
    "μs": 1,
    "µs": 1,
    "msec": 1_000,
    "ms": 1_000,
    "seconds": 1_000_000,
    "second": 1_000_000,
    "sec": 1_000_000,
    "s": 1_000_000,
    "": 1_000_000,
    "minutes": 60_000_000,
    "minute": 60_000_000,
    "min": 60_000_000,
    "m": 60_000_000,
    "hours": 3_600_000_000,
    "hour": 3_600_000_000,
    "hr": 3_600_000_000,
    "h": 3_600_000_000,
    "days": 86_400_000_000,
    "day": 86_400_000_000,
    "d": 86_400_000_000,
    "weeks": 604_800_000_000,
    "week": 604_800_000_000,
    "w": 604_800_000_000,
}
# ASCII digits only, as systemd: `\d` alone would take '٣' for a 3.
_COMPONENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-zμµ]*)", re.ASCII)
# systemd's USEC_INFINITY: longer spans are out of range (parse_time() gives -ERANGE).
_USEC_MAX = 2**64 - 1


class TimespanError(InvalidValue):
    """Not a finite systemd time span; the message says what was expected."""


def parse_timespan_ms(text: str) -> int:
    """Milliseconds in a systemd time span, rounded up so a tiny span never becomes zero."""
    stripped = text.strip()
    if not stripped:
        raise TimespanError("expected a time span such as 500ms, 10s or 1min")
    if stripped == "infinity":
        raise TimespanError("the wait must be finite: a unit's start cannot wait forever")
    usec = 0
    pos = 0
    while pos < len(stripped):
        match = _COMPONENT.match(stripped, pos)
        if match is None or match.end() == pos:
            raise TimespanError(f"'{text}' is not a time span (expected e.g. 500ms, 10s, 1min 30s)")
        number, unit = match.groups()
        if unit not in _USEC:
            raise TimespanError(
                f"unknown time unit '{unit}' in '{text}' (expected us, ms, s, min, h, d or w)"
            )
        # Exact integers, truncating the fraction as systemd's parse_time() does (and without
        # `decimal`, whose import alone costs a held `check` ~3 ms).
        # Past 20 digits a whole part is out of range whatever follows, and a fraction's
        # further digits are below a microsecond (and int() refuses over 4,300 digits).
        whole, _, fraction = number.partition(".")
        whole, fraction = whole.lstrip("0"), fraction[:20]
        if len(whole) > 20:
            raise TimespanError(f"'{text}' is too long (a time span is below 584,000 years)")
        scale = _USEC[unit]
        usec += int(whole or 0) * scale + int(fraction or 0) * scale // 10 ** len(fraction)
        pos = match.end()
    if usec >= _USEC_MAX:
        raise TimespanError(f"'{text}' is too long (a time span is below 584,000 years)")
    return -(-usec // 1_000)


def format_ms(ms: int) -> str:
    """A compact span for messages: `250ms`, `10s`, `1.5s`."""
    if ms < 1_000:
        return f"{ms}ms"
    seconds = ms / 1_000
    return f"{seconds:g}s"

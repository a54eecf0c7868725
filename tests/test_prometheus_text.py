"""The strict exposition-format parser the audit's metrics are checked with: it must take
valid text as written and refuse each kind of invalid text, naming the line."""

import math

import pytest

from tests.prometheus_text import ExpositionError, parse

GOOD = """\
# A comment is not a HELP line.
# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027
http_requests_total{method="post",code="400"}    3

# HELP escapes A help with a backslash \\\\ and a newline \\n in it.
# TYPE escapes gauge
escapes{path="C:\\\\DIR\\\\",quote="say \\"hi\\"",multi="a\\nb",empty=""} 1.5e3
escapes{path="other",} -0.5
# TYPE specials gauge
specials{v="nan"} NaN
specials{v="inf"} +Inf
specials{v="-inf"} -Inf
specials{v="exp"} .5E-2
untyped_metric 7
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
"""


def test_valid_text_is_read_as_written() -> None:
    families = parse(GOOD)

    assert list(families) == [
        "http_requests_total", "escapes", "specials", "untyped_metric",
        "rpc_duration_seconds", "http_request_duration_seconds",
    ]  # fmt: skip
    requests = families["http_requests_total"]
    assert (requests.type, requests.help) == ("counter", "The total number of HTTP requests.")
    assert requests.series("http_requests_total", method="post", code="400").value == 3
    escapes = families["escapes"]
    assert escapes.help == "A help with a backslash \\ and a newline \n in it."
    sample = escapes.samples[0]
    assert sample.labels == {
        "path": "C:\\DIR\\", "quote": 'say "hi"', "multi": "a\nb", "empty": ""
    }  # fmt: skip
    assert sample.value == 1500
    assert escapes.series("escapes", path="other").value == -0.5
    specials = families["specials"]
    assert math.isnan(specials.series("specials", v="nan").value)
    assert specials.series("specials", v="inf").value == math.inf
    assert specials.series("specials", v="-inf").value == -math.inf
    assert specials.series("specials", v="exp").value == 0.005
    assert families["untyped_metric"].type == "untyped"
    assert len(families["rpc_duration_seconds"].samples) == 3
    assert len(families["http_request_duration_seconds"].samples) == 4


def test_empty_text_has_no_families() -> None:
    assert parse("") == {}


def test_timestamps_only_when_allowed() -> None:
    text = "up 1 1700000000000\n"
    assert parse(text, timestamps=True)["up"].samples[0].timestamp == 1700000000000
    with pytest.raises(ExpositionError, match="timestamp"):
        parse(text)


BAD = [
    ("up 1", 1, "does not end with a newline"),
    ("# HELP up Up.\n# TYPE up gauge\nup 1", 3, "does not end with a newline"),
    ("1up 1\n", 1, "does not start with a metric name"),
    ("up-time 1\n", 1, "expected a blank and a value"),
    ("# TYPE up-time gauge\n", 1, "is not a metric name"),
    ("# HELP 9up Up.\n", 1, "is not a metric name"),
    ('up{1a="x"} 1\n', 1, "expected a label name"),
    ('up{a-b="x"} 1\n', 1, "expected '='"),
    ('up{__name__="x"} 1\n', 1, "reserved"),
    ('up{a="x",a="y"} 1\n', 1, "label a given twice"),
    ('up{a="\\x"} 1\n', 1, "invalid escape sequence: \\x"),
    ('up{a="C:\\"} 1\n', 1, "not closed"),
    ('up{a="say "hi""} 1\n', 1, "expected ',' or '}'"),
    ("up{a=x} 1\n", 1, "expected a quoted value"),
    ('up{a="x" b="y"} 1\n', 1, "expected ',' or '}'"),
    ('up{a="x"}1\n', 1, "expected a blank and a value"),
    ("up\n", 1, "expected a blank and a value"),
    ("up one\n", 1, "is not a value"),
    ("up 1_000\n", 1, "is not a value"),
    ("up 0x10\n", 1, "is not a value"),
    ("up inf\n", 1, "is not a value"),
    ("up 1 2 3\n", 1, "is not a timestamp"),
    ("up 1 1.5\n", 1, "is not a timestamp"),
    ("up 1\nup 2\n", 2, "second sample of up"),
    ('up{a="1",b="2"} 1\nup{b="2",a="1"} 1\n', 2, "second sample of up"),
    ("up 1\n# TYPE up gauge\n", 2, "TYPE for up after its samples"),
    ("up 1\n# HELP up Up.\n", 2, "HELP for up after its samples"),
    ("# TYPE up gauge\n# TYPE up counter\n", 2, "a second TYPE for up"),
    ("# HELP up A.\n# HELP up B.\n", 2, "a second HELP for up"),
    ("# TYPE up Gauge\n", 1, "TYPE 'Gauge'"),
    ("# TYPE up\n", 1, "TYPE ''"),
    ('up{a="1"} 1\ndown 1\nup{a="2"} 1\n', 3, "split in two"),
    ("# HELP up Up.\ndown 1\nup 1\n", 3, "split in two"),
    ("# HELP up A backslash \\ alone.\n", 1, "invalid escape sequence: \\ "),
    ("# HELP up Ends with \\\n", 1, "a backslash at the end"),
    ("# TYPE c counter\nc -1\n", 2, "negative"),
    ("# TYPE h histogram\nh 1\n", 2, "only _bucket, _sum and _count"),
    ("# TYPE h histogram\nh_bucket 1\n", 2, "needs an 'le' label"),
    ("# TYPE s summary\ns 1\n", 2, "needs a 'quantile' label"),
    ("# TYPE h histogram\nh_sum 1\nother 1\nh_count 1\n", 4, "split in two"),
    ("up 1\r\n", 1, "is not a value"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD, ids=[t for t, _, _ in BAD])
def test_invalid_text_is_refused_naming_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ExpositionError) as caught:
        parse(text)
    assert caught.value.line == line, caught.value
    assert message in caught.value.message, caught.value


def test_bytes_must_be_utf8() -> None:
    assert parse('up{a="ü"} 1\n'.encode())["up"].samples[0].labels == {"a": "ü"}
    with pytest.raises(ExpositionError, match="line 2: not UTF-8"):
        parse(b'up 1\nup{a="\xff"} 1\n')

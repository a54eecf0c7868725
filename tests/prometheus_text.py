"""A strict parser of Prometheus' text exposition format (version 0.0.4), to prove that what
`portguard audit --format prometheus` writes is what node_exporter's textfile collector reads.

Where the format's documentation says a thing must or must not be, this parser refuses it,
even where Prometheus' own Go parser is lenient (it quietly merges a family split in two
and takes a HELP line after the samples). Like the textfile collector it refuses sample
timestamps, unless asked to allow them. Every error names its line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}
_TIMESTAMP = re.compile(r"-?[0-9]+")
_BLANKS = " \t"
# The samples a histogram or summary family NAME is made of: NAME_bucket, NAME_sum, ...
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


class ExpositionError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    timestamp: int | None = None


@dataclass
class Family:
    name: str
    type: str | None = None  # None until a TYPE line or the first sample (then "untyped")
    help: str | None = None
    samples: list[Sample] = field(default_factory=list)
    _series: set[tuple[str, frozenset[tuple[str, str]]]] = field(default_factory=set)

    def series(self, name: str, **labels: str) -> Sample:
        """The one sample of NAME with exactly LABELS (a KeyError if there is none)."""
        for sample in self.samples:
            if sample.name == name and sample.labels == labels:
                return sample
        raise KeyError((name, labels))


def parse(text: str | bytes, *, timestamps: bool = False) -> dict[str, Family]:
    """Every metric family of TEXT by name, in order; ExpositionError on anything invalid."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExpositionError(text[: exc.start].count(b"\n") + 1, "not UTF-8") from None
    if text and not text.endswith("\n"):
        raise ExpositionError(text.count("\n") + 1, "the last line does not end with a newline")
    return _Parser(timestamps=timestamps).run(text.split("\n")[:-1])


class _Parser:
    def __init__(self, *, timestamps: bool) -> None:
        self.timestamps = timestamps
        self.families: dict[str, Family] = {}
        self.current: Family | None = None
        self.line = 0

    def fail(self, message: str) -> ExpositionError:
        return ExpositionError(self.line, message)

    def run(self, lines: list[str]) -> dict[str, Family]:
        for self.line, raw in enumerate(lines, start=1):
            text = raw.lstrip(_BLANKS)
            if not text.strip(_BLANKS):
                continue
            if text.startswith("#"):
                self.comment(text[1:].lstrip(_BLANKS))
            else:
                self.sample(text)
        return self.families

    def enter(self, name: str) -> Family:
        """The family NAME, which must be the current one or not seen before."""
        if self.current is not None and self.current.name == name:
            return self.current
        if name in self.families:
            raise self.fail(f"the lines of {name} are split in two (a family is one group)")
        self.current = self.families[name] = Family(name)
        return self.current

    # --- HELP, TYPE, comments -------------------------------------------------------------

    def comment(self, text: str) -> None:
        keyword, _, rest = _split_token(text)
        if keyword not in ("HELP", "TYPE"):
            return  # an ordinary comment
        name, _, rest = _split_token(rest)
        if not METRIC_NAME.fullmatch(name):
            raise self.fail(f"{keyword}: {name!r} is not a metric name")
        family = self.enter(name)
        if family.samples:
            raise self.fail(f"{keyword} for {name} after its samples")
        if keyword == "HELP":
            if family.help is not None:
                raise self.fail(f"a second HELP for {name}")
            family.help = self.unescape(rest.lstrip(_BLANKS), quoted=False)
            return
        if family.type is not None:
            raise self.fail(f"a second TYPE for {name}")
        kind = rest.strip(_BLANKS)
        if kind not in TYPES:
            raise self.fail(f"TYPE {kind!r} for {name} is none of {', '.join(TYPES)}")
        family.type = kind

    def unescape(self, text: str, *, quoted: bool) -> str:
        """HELP text knows \\\\ and \\n; a label value also \\"."""
        escapes = {"\\": "\\", "n": "\n"} | ({'"': '"'} if quoted else {})
        out: list[str] = []
        chars = iter(text)
        for char in chars:
            if char != "\\":
                out.append(char)
                continue
            following = next(chars, None)
            if following not in escapes:
                shown = "a backslash at the end" if following is None else f"\\{following}"
                raise self.fail(f"invalid escape sequence: {shown}")
            out.append(escapes[following])
        return "".join(out)

    # --- samples --------------------------------------------------------------------------

    def sample(self, text: str) -> None:
        match = METRIC_NAME.match(text)
        if match is None:
            raise self.fail(f"{text[:20]!r} does not start with a metric name")
        name, rest = match.group(), text[match.end() :]
        labels: dict[str, str] = {}
        if rest.startswith("{"):
            labels, rest = self.labels(rest[1:])
        if not rest or rest[0] not in _BLANKS:
            raise self.fail(f"expected a blank and a value after {name}, got {rest[:20]!r}")
        value_text, _, rest = _split_token(rest.lstrip(_BLANKS))
        value = self.value(value_text)
        timestamp = self.timestamp(rest.strip(_BLANKS))
        family = self.enter(self.family_of(name))
        if family.type is None:
            family.type = "untyped"
        self.check_type(family, name, labels, value)
        key = (name, frozenset(labels.items()))
        if key in family._series:
            raise self.fail(f"a second sample of {name} with the same labels {labels}")
        family._series.add(key)
        family.samples.append(Sample(name, labels, value, timestamp))

    def labels(self, text: str) -> tuple[dict[str, str], str]:
        """`name="value",...}`, then the rest of the line."""
        labels: dict[str, str] = {}
        rest = text.lstrip(_BLANKS)
        while not rest.startswith("}"):
            match = LABEL_NAME.match(rest)
            if match is None:
                raise self.fail(f"expected a label name or '}}', got {rest[:20]!r}")
            label = match.group()
            if label.startswith("__"):
                raise self.fail(f"label name {label} is reserved (it starts with __)")
            if label in labels:
                raise self.fail(f"label {label} given twice")
            rest = rest[match.end() :].lstrip(_BLANKS)
            if not rest.startswith("="):
                raise self.fail(f"expected '=' after label {label}")
            rest = rest[1:].lstrip(_BLANKS)
            if not rest.startswith('"'):
                raise self.fail(f"expected a quoted value for label {label}, got {rest[:20]!r}")
            labels[label], rest = self.label_value(rest[1:])
            rest = rest.lstrip(_BLANKS)
            if rest.startswith(","):
                rest = rest[1:].lstrip(_BLANKS)  # the format allows a comma before '}'
            elif not rest.startswith("}"):
                raise self.fail(f"expected ',' or '}}' after label {label}, got {rest[:20]!r}")
        return labels, rest[1:]

    def label_value(self, text: str) -> tuple[str, str]:
        index = 0
        while index < len(text):
            if text[index] == "\\":
                index += 2
            elif text[index] == '"':
                return self.unescape(text[:index], quoted=True), text[index + 1 :]
            else:
                index += 1
        raise self.fail("a label value is not closed by '\"'")

    def value(self, text: str) -> float:
        if text in _SPECIAL:
            return _SPECIAL[text]
        if not _FLOAT.fullmatch(text):
            raise self.fail(f"{text!r} is not a value (a float, NaN, +Inf or -Inf)")
        return float(text)

    def timestamp(self, text: str) -> int | None:
        if not text:
            return None
        if not _TIMESTAMP.fullmatch(text):
            raise self.fail(f"{text!r} is not a timestamp (milliseconds, an integer)")
        if not self.timestamps:
            raise self.fail("a sample has a timestamp, which the textfile collector refuses")
        stamp = int(text)
        if not -(2**63) <= stamp < 2**63:
            raise self.fail(f"timestamp {text} is out of int64's range")
        return stamp

    def family_of(self, name: str) -> str:
        """NAME's family: a histogram's or summary's for its _bucket/_sum/_count samples."""
        for base, family in self.families.items():
            suffixes = _SUFFIXES.get(family.type or "", ())
            if any(name == base + suffix for suffix in suffixes):
                return base
        return name

    def check_type(self, family: Family, name: str, labels: dict[str, str], value: float) -> None:
        if family.type == "histogram":
            if name == family.name:
                raise self.fail(f"histogram {name} has only _bucket, _sum and _count samples")
            if name.endswith("_bucket") and "le" not in labels:
                raise self.fail(f"{name} needs an 'le' label")
        elif family.type == "summary":
            if name == family.name and "quantile" not in labels:
                raise self.fail(f"summary sample {name} needs a 'quantile' label")
        elif family.type == "counter" and value < 0:
            raise self.fail(f"counter {name} is negative ({value})")


def _split_token(text: str) -> tuple[str, str, str]:
    """The first blank-separated token of TEXT, the blank, and the rest after it."""
    for index, char in enumerate(text):
        if char in _BLANKS:
            return text[:index], char, text[index + 1 :]
    return text, "", ""

"""Scraped series on promtool's timeline: what `promtool test rules` reads as input_series.

A host's textfile is a sequence of frames, one per minute: the series node_exporter would
serve that minute (None: it serves no portguard textfile). A series missing from a frame
after being present gets `stale`, as Prometheus writes a staleness marker when a series
leaves a scrape; before it first appears, and after the marker, it has no sample (`_`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.prometheus_text import parse

Labels = tuple[tuple[str, str], ...]
Series = tuple[str, Labels]  # metric name, labels in order
Frame = dict[Series, float] | None

TEXTFILE = "/var/lib/prometheus/node-exporter/portguard.prom"  # the audit unit's default
_PLACEHOLDER = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def scraped(exposition: str, instance: str) -> dict[Series, float]:
    """Every sample of one real `audit --format prometheus` output, as node_exporter's scrape
    labels it on the Prometheus side: with `instance` and `job` added, and without empty
    labels (Prometheus takes a label with an empty value for no label)."""
    series: dict[Series, float] = {}
    for family in parse(exposition).values():
        for sample in family.samples:
            labels = {**sample.labels, "instance": instance, "job": "node"}
            kept = tuple(sorted((k, v) for k, v in labels.items() if v))
            series[(sample.name, kept)] = sample.value
    return series


def input_series(frames: Sequence[Frame]) -> list[dict[str, str]]:
    """promtool's input_series for FRAMES (one a minute, from 0m)."""
    every: dict[Series, None] = {}
    for frame in frames:
        every.update(dict.fromkeys(frame or {}))
    out = []
    for key in every:
        values = []
        previous = False
        for frame in frames:
            present = frame is not None and key in frame
            if present:
                values.append(_number(frame[key]))  # type: ignore[index]
            else:
                values.append("stale" if previous else "_")
            previous = present
        out.append({"series": selector(key), "values": " ".join(values)})
    return out


def selector(key: Series) -> str:
    name, labels = key
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def filled_annotations(
    rule: Mapping[str, object], labels: Mapping[str, str], value: str = ""
) -> dict[str, str]:
    """A rule's annotations with each `{{ $labels.X }}` filled in, and `{{ $value }}` (also
    piped through humanizeDuration) as VALUE: the rules use no other templates."""
    texts = rule.get("annotations", {})
    assert isinstance(texts, dict)
    filled = {}
    for name, template in texts.items():
        text = _PLACEHOLDER.sub(lambda m: labels.get(m.group(1), ""), str(template))
        text = text.replace("{{ $value | humanizeDuration }}", value)
        filled[name] = text.replace("{{ $value }}", value)
    return filled


def rules_by_name(groups: Mapping[str, object]) -> dict[str, dict[str, object]]:
    found = {}
    for group in groups["groups"]:  # type: ignore[attr-defined]
        for rule in group["rules"]:
            found[rule.get("alert") or rule["record"]] = rule
    return found


def write_test(path: Path, rule_file: Path, content: Mapping[str, object]) -> None:
    import yaml  # noqa: PLC0415

    path.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], **content}, sort_keys=False))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

"""YAML read as a node tree, so every value keeps its file:line:col.

Problems are collected as findings, never raised: one bad value does not hide the next.
"""

import difflib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from portguard.errors import ConfigError
from portguard.registry.findings import Finding, Location, Severity

# libyaml's C loader when the system has it: a large registry parses several times faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A registry nests five levels deep; the composers recurse per level (libyaml's overflows the
# C stack and crashes the process near 30,000), so deeper input is refused before composing.
MAX_DEPTH = 64
# The values aliases may add to a small file before they must stay within what it spells out.
MIN_EXPANSION = 10_000


class Invalid(ConfigError):
    """A value that cannot be used, already reported as a finding: the model stops reading
    that value and goes on with the next."""

    def __init__(self) -> None:
        super().__init__("a value that cannot be used (reported as a finding)")


def _error(location: Location, rule: str, message: str) -> Finding:
    return Finding(Severity.ERROR, location, message, rule)


class NodeReader:
    """Reads one YAML file's nodes, recording a located finding for each problem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.constructor = yaml.constructor.SafeConstructor()

    def at(self, node: yaml.Node, offset: int = 0) -> Location:
        mark = node.start_mark
        # A quoted scalar starts at its quote; point inside it, at character OFFSET of its text.
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
        column = mark.column + 1 + offset + (1 if quoted else 0)
        return Location(str(self.path), mark.line + 1, column)

    def report(
        self,
        node: yaml.Node | None,
        rule: str,
        message: str,
        severity: Severity = Severity.ERROR,
        offset: int = 0,
    ) -> None:
        location = self.at(node, offset) if node is not None else Location(str(self.path))
        self.findings.append(Finding(severity, location, message, rule))

    # Reading and YAML.
    def compose(self) -> yaml.Node | None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self.report(None, "unreadable", f"cannot read: {exc.strerror or exc}")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            self.findings.append(
                _error(
                    Location(str(self.path), line, column),
                    "encoding",
                    f"byte 0x{data[exc.start]:02x} is not UTF-8 (a registry is UTF-8 text)",
                )
            )
            return None
        try:
            if not self._shallow(text):
                return None
            root: yaml.Node | None = yaml.compose(text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            self._yaml_error(exc)
            return None
        except yaml.YAMLError as exc:
            self._reader_error(text, exc)
            return None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
            self.report(None, "empty", "the file is empty (expected a mapping with 'version: 1')")
            return None
        return root

    def _shallow(self, text: str) -> bool:
        """Whether TEXT nests at most MAX_DEPTH levels (the parser is iterative, not recursive)
        and its aliases at most double it (an alias is its anchor's values again, for every
        reader that walks it: 34,000 units whose `listen` is one alias of 1,000 claims are 34
        million claims, out of 1 MB)."""
        depth = 0
        spelled = expanded = 0
        sizes: dict[str, int] = {}  # anchor -> its node's values, aliases expanded
        open_: list[tuple[str | None, int]] = []  # the collections around: anchor, values so far
        for event in yaml.parse(text, Loader=_Loader):
            size = 0
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    self._refuse(event, f"invalid YAML: nested deeper than {MAX_DEPTH} levels")
                    return False
                open_.append((event.anchor, 1))
                spelled += 1
                expanded += 1
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                anchor, size = open_.pop()
                if anchor is not None:
                    sizes[anchor] = size
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                spelled += 1
                expanded += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                size = sizes.get(event.anchor or "", 1)  # an unknown anchor: the composer says so
                expanded += size
                if expanded > max(2 * spelled, MIN_EXPANSION):
                    self._refuse(event, f"aliases repeat more than the file spells out: "
                                 f"{expanded:,} values by here from {spelled:,} written "
                                 "(anchors are for a few shared values)")  # fmt: skip
                    return False
            if open_ and size:
                anchor, inside = open_[-1]
                open_[-1] = (anchor, inside + size)
        return True

    def _refuse(self, event: yaml.Event, message: str) -> None:
        mark = event.start_mark
        location = (
            Location(str(self.path), mark.line + 1, mark.column + 1)
            if mark
            else Location(str(self.path))
        )
        self.findings.append(_error(location, "yaml", message))

    def _yaml_error(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        # As PyYAML words it: "expected a single document in the stream, but found another".
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        location = (
            Location(str(self.path), mark.line + 1, mark.column + 1)
            if mark
            else Location(str(self.path))
        )
        self.findings.append(_error(location, "yaml", f"invalid YAML: {problem}"))

    def _reader_error(self, text: str, exc: yaml.YAMLError) -> None:
        position = getattr(exc, "position", None)
        if isinstance(position, int) and 0 <= position <= len(text):
            line = text.count("\n", 0, position) + 1
            column = position - (text.rfind("\n", 0, position) + 1) + 1
            location = Location(str(self.path), line, column)
        else:
            location = Location(str(self.path))
        char = getattr(exc, "character", None)
        what = f"character {char!r}" if isinstance(char, str) else "a character"
        self.findings.append(
            _error(
                location, "yaml", f"invalid YAML: {what} that YAML does not allow (binary data?)"
            )
        )

    def pairs(
        self, node: yaml.Node, allowed: Sequence[str] | None, where: str
    ) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """The key/value nodes of a mapping; reports non-text, duplicate and unknown keys."""
        seen: dict[str, yaml.Node] = {}
        assert isinstance(node, yaml.MappingNode)
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.report(
                    key_node,
                    "merge-key",
                    "merge keys (<<) are not supported; use 'defaults:' instead",
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.report(key_node, "type", f"expected a key name in {where}")
                continue
            key = key_node.value
            if key in seen:
                self.report(
                    key_node,
                    "duplicate-key",
                    f"'{key}' appears twice in {where} (first at line "
                    f"{seen[key].start_mark.line + 1})",
                )
                continue
            seen[key] = key_node
            if allowed is not None and key not in allowed:
                self._unknown_key(key_node, key, allowed, where)
                continue
            yield key, key_node, value_node

    def _unknown_key(self, node: yaml.Node, key: str, allowed: Sequence[str], where: str) -> None:
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        expected = ", ".join(allowed)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (expected one of: {expected})"
        self.report(node, "unknown-key", f"unknown key '{key}' in {where}{hint}")

    # Typed values.
    def expect_mapping(self, node: yaml.Node, what: str, *, null_ok: bool = False) -> bool:
        if isinstance(node, yaml.MappingNode):
            return True
        if null_ok and node.tag.endswith(":null"):
            return False
        self.report(node, "type", f"{what} must be a mapping, got {self.describe(node)}")
        raise Invalid

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return node
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
        # `!!int abc`, `!!bool maybe`, `2001-13-45` or a 5,000-digit number fail inside the
        # constructor with ValueError, KeyError or AttributeError rather than a YAMLError.
        except Exception:
            shown = node.value if len(node.value) <= 40 else f"{node.value[:40]}..."
            problem = f"'{shown}' is not a valid {node.tag.rpartition(':')[2]}"
        self.report(node, "type", f"cannot read this value: {problem}")
        raise Invalid

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        tag = node.tag.rpartition(":")[2]
        names = {
            "null": "nothing (null)",
            "bool": f"the boolean {node.value}",
            "int": f"the number {node.value}",
            "float": f"the number {node.value}",
        }
        return names.get(tag, f"'{node.value}'")

    def bool(self, node: yaml.Node, key: str) -> bool:
        value = self.scalar(node)
        if isinstance(value, bool):
            return value
        self.report(node, "type", f"'{key}' must be true or false, got {self.describe(node)}")
        raise Invalid

    def text(self, node: yaml.Node, key: str) -> str:
        value = self.scalar(node)
        if isinstance(value, str) and value.strip():
            return value
        self.report(node, "type", f"'{key}' must be non-empty text, got {self.describe(node)}")
        raise Invalid

"""Registry v1: YAML files -> frozen dataclasses, with a file:line:col for every problem.

Pure: reads only the files it is given. Parsing works on YAML's node tree rather than on
loaded Python objects, so every value keeps its position and a port written as `8080`
is read from its source text, never through YAML 1.1's number rules.
"""

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from portguard.registry.claims import (
    ClaimSyntaxError,
    ListenParts,
    Proto,
    parse_listen,
)
from portguard.registry.entries import (
    VERSION,
    Listen,
    LoadResult,
    Mode,
    Options,
    Registry,
    RegistrySource,
    UnitEntry,
)
from portguard.registry.findings import Finding, Location, Severity
from portguard.registry.keys import DEFAULT_KEYS, LISTEN_KEYS, SINCE, TOP_KEYS, UNIT_KEYS
from portguard.registry.timespan import TimespanError, parse_timespan_ms
from portguard.registry.unitname import (
    UnitNameKind,
    guard_dir_problem,
    unit_name_kind,
    unit_name_problem,
)
from portguard.registry.yamlfile import Invalid, NodeReader


def load(source: RegistrySource) -> LoadResult:
    """Parse and merge every file of SOURCE; problems come back as findings, never raised."""
    with without_cycle_collector():
        return _load(source)


@contextlib.contextmanager
def without_cycle_collector() -> Iterator[None]:
    """The YAML trees and the model are many objects and no reference cycles, and the cycle
    collector would scan them over and over while they are made: two thirds of the time of a
    20,000-unit lint. Memory is still freed by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(source: RegistrySource) -> LoadResult:
    findings: list[Finding] = []
    units: dict[str, UnitEntry] = {}
    base = Options()
    for index, path in enumerate(source.files):
        parsed = _FileParser(path, base).parse()
        findings.extend(parsed.findings)
        if index == 0 and source.main is not None:
            base = parsed.defaults
        for entry in parsed.units:
            first = units.get(entry.name)
            if first is not None:
                findings.append(
                    _error(
                        entry.location,
                        "duplicate-unit",
                        f"{entry.name} is already defined at {first.location}",
                    )
                )
                continue
            units[entry.name] = entry
    registry = Registry(units, tuple(str(p) for p in source.files))
    return LoadResult(registry, tuple(findings))


def _error(location: Location, rule: str, message: str) -> Finding:
    return Finding(Severity.ERROR, location, message, rule)


# --- one file ------------------------------------------------------------------------------

_GUARDABLE_TYPES = ("service", "socket")


@dataclass(slots=True)
class _ParsedFile:
    defaults: Options
    units: list[UnitEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


class _FileParser:
    """One registry file, read against the v1 schema."""

    def __init__(self, path: Path, inherited: Options) -> None:
        self.nodes = NodeReader(path)
        self.result = _ParsedFile(inherited)

    def parse(self) -> _ParsedFile:
        root = self.nodes.compose()
        if root is not None:
            self._document(root)
        self.result.findings = sorted(
            self.nodes.findings, key=lambda f: (f.location.line, f.location.column)
        )
        return self.result

    def _wait(self, node: yaml.Node) -> int:
        value = self.nodes.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.nodes.report(
                node,
                "type",
                f"'wait' must be a time span such as 10s, got {self.nodes.describe(node)}",
            )
            raise Invalid
        try:
            ms = parse_timespan_ms(str(value))
        except TimespanError as exc:
            self.nodes.report(node, "timespan", str(exc))
            raise Invalid from None
        return ms

    def _mode(self, node: yaml.Node) -> Mode:
        value = self.nodes.scalar(node)
        try:
            return Mode(value)
        except ValueError:
            self.nodes.report(
                node,
                "type",
                f"'mode' must be enforce, warn or audit, got {self.nodes.describe(node)}",
            )
            raise Invalid from None

    def _options(
        self, node: yaml.Node, base: Options, allowed: Sequence[str], where: str, *, udp: bool
    ) -> tuple[Options, dict[str, tuple[yaml.Node, yaml.Node]]]:
        """Options set in a mapping over BASE; returns the keys it did not handle. UDP: the
        mapping's reuseaddr/reuseport apply to UDP claims too (a unit's, a listen entry's)."""
        changes: dict[str, Any] = {}
        rest: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        readers = {
            "wait": ("wait_ms", self._wait),
            "mode": ("mode", self._mode),
            "owner": ("owner", lambda n: self.nodes.text(n, "owner")),
        }
        for key, key_node, value_node in self.nodes.pairs(node, allowed, where):
            try:
                if key in readers:
                    attr, read = readers[key]
                    changes[attr] = read(value_node)
                elif key in ("reuseaddr", "reuseport", "v6only", "freebind"):
                    changes[key] = self.nodes.bool(value_node, key)
                    if udp and key in ("reuseaddr", "reuseport"):
                        changes[f"udp_{key}"] = changes[key]
                else:
                    rest[key] = (key_node, value_node)
            except Invalid:
                continue
        return replace(base, **changes), rest

    # The document.
    def _document(self, root: yaml.Node) -> None:
        try:
            self.nodes.expect_mapping(root, "the top level of a registry")
        except Invalid:
            return
        top = {key: (k, v) for key, k, v in self.nodes.pairs(root, TOP_KEYS, "the top level")}
        self._version(root, top.get("version"))
        if "defaults" in top:
            self._defaults(top["defaults"][1])
        if "units" in top:
            self._units(top["units"][1])

    def _version(self, root: yaml.Node, pair: tuple[yaml.Node, yaml.Node] | None) -> None:
        if pair is None:
            self.nodes.report(root, "version", "missing 'version: 1' at the top level")
            return
        node = pair[1]
        if node.tag.endswith(":int") and node.value.strip() == str(VERSION):
            return
        if node.tag.endswith(":str") and node.value.strip() == str(VERSION):
            message = f"'version' must be the number {VERSION}, not the text '{node.value}'"
            self.nodes.report(node, "version", f"{message} (remove the quotes)")
            return
        shown = node.value if isinstance(node, yaml.ScalarNode) else self.nodes.describe(node)
        self.nodes.report(
            node, "version", f"unsupported version '{shown}' (expected 'version: {VERSION}')"
        )

    def _mapping_or_empty(self, node: yaml.Node, what: str) -> bool:
        """Whether NODE is a mapping to read; `key:` left empty (null) means none."""
        try:
            return self.nodes.expect_mapping(node, what, null_ok=True)
        except Invalid:
            return False

    def _defaults(self, node: yaml.Node) -> None:
        if not self._mapping_or_empty(node, "'defaults'"):
            return
        self.result.defaults, _ = self._options(
            node, self.result.defaults, DEFAULT_KEYS, "'defaults'", udp=False
        )

    def _units(self, node: yaml.Node) -> None:
        if not self._mapping_or_empty(node, "'units'"):
            return
        for name, key_node, value_node in self.nodes.pairs(node, None, "'units'"):
            try:
                self.result.units.append(self._unit(name, key_node, value_node))
            except Invalid:
                continue

    def _unit_name(self, name: str, node: yaml.Node) -> None:
        problem = unit_name_problem(name)
        if problem is None and guard_dir_problem(name):
            problem = f"'{name}' cannot be guarded: {guard_dir_problem(name)}"
        elif problem is None and name.rpartition(".")[2] not in _GUARDABLE_TYPES:
            problem = (
                f"'{name}' cannot be guarded: expected a .service or .socket unit "
                "(the guard runs from ExecStartPre=)"
            )
        elif problem is not None:
            problem = f"'{name}' is not a valid unit name: {problem}"
        if problem is not None:
            self.nodes.report(node, "unit-name", problem)
            raise Invalid

    def _unit(self, name: str, key_node: yaml.Node, node: yaml.Node) -> UnitEntry:
        self._unit_name(name, key_node)
        self.nodes.expect_mapping(node, f"unit {name}")
        options, rest = self._options(
            node, self.result.defaults, UNIT_KEYS, f"unit {name}", udp=True
        )
        template = unit_name_kind(name) is UnitNameKind.TEMPLATE
        listen: tuple[Listen, ...] = ()
        if "listen" not in rest:
            self.nodes.report(key_node, "missing-key", f"unit {name} needs 'listen' (its ports)")
        else:
            listen = self._listen_list(rest["listen"][1], options, template)
        via = self._via(rest["via"][1]) if "via" in rest else ()
        description = None
        if "description" in rest:
            with contextlib.suppress(Invalid):
                description = self.nodes.text(rest["description"][1], "description")
        return UnitEntry(
            name,
            self.nodes.at(key_node),
            listen,
            options.wait_ms,
            options.mode,
            options.owner,
            description,
            via,
        )

    def _via(self, node: yaml.Node) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.nodes.report(
                node,
                "type",
                f"'via' must be a list of unit names, e.g. [nginx.socket], "
                f"got {self.nodes.describe(node)}",
            )
            return ()
        names = []
        for item in node.value:
            value = self.nodes.scalar(item) if isinstance(item, yaml.ScalarNode) else None
            problem = unit_name_problem(value) if isinstance(value, str) else "expected a unit name"
            if problem is not None:
                self.nodes.report(
                    item,
                    "unit-name",
                    f"'via' entry {self.nodes.describe(item)} is not a valid unit name: {problem}",
                )
                continue
            assert isinstance(value, str)
            names.append(value)
        return tuple(names)

    def _listen_list(self, node: yaml.Node, options: Options, template: bool) -> tuple[Listen, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.nodes.report(
                node,
                "type",
                f"'listen' must be a list such as [8080/tcp], got {self.nodes.describe(node)}",
            )
            return ()
        if not node.value:
            self.nodes.report(node, "type", "'listen' is empty (expected at least one port)")
        listens = []
        for item in node.value:
            try:
                listens.append(self._listen(item, options, template))
            except Invalid:
                continue
        return tuple(listens)

    def _listen(self, node: yaml.Node, options: Options, template: bool) -> Listen:
        text_node = node
        rest: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        if isinstance(node, yaml.MappingNode):
            options, rest = self._options(node, options, LISTEN_KEYS, "a listen entry", udp=True)
            if "port" not in rest:
                self.nodes.report(node, "missing-key", "a listen entry mapping needs 'port'")
                raise Invalid
            text_node = rest["port"][1]
        if not isinstance(text_node, yaml.ScalarNode) or text_node.tag.rpartition(":")[2] not in (
            "str",
            "int",
        ):
            self.nodes.report(
                text_node,
                "type",
                f"expected a port such as 8080/tcp, got {self.nodes.describe(text_node)}",
            )
            raise Invalid
        # The source text, not YAML's reading of it: `1:80` must not become sexagesimal 140.
        text = text_node.value
        try:
            parts = parse_listen(text)
        except ClaimSyntaxError as exc:
            self.nodes.report(text_node, "listen", f"'{text}': {exc.message}", offset=exc.offset)
            raise Invalid from None
        if parts.first is None and not template:
            self.nodes.report(
                text_node,
                "listen",
                f"'{text}': %i is only allowed in a template unit (name@.service)",
            )
            raise Invalid
        mapped = getattr(parts.address, "ipv4_mapped", None)
        if mapped is not None and options.v6only:
            self.nodes.report(
                text_node,
                "listen",
                f"'{text}': an IPv4-mapped address with v6only: true can never be bound (the "
                f"kernel answers EINVAL); drop v6only, or claim {mapped} itself",
            )
            raise Invalid
        udp = parts.proto is Proto.UDP
        return Listen(
            text,
            self.nodes.at(text_node),
            parts,
            options.v6only,
            options.udp_reuseaddr if udp else options.reuseaddr,
            options.udp_reuseport if udp else options.reuseport,
            options.freebind,
            self._pool(rest, parts, text),
            tuple(key for key in rest if key in SINCE),
        )

    def _pool(self, rest: dict[str, tuple[yaml.Node, yaml.Node]], parts: ListenParts, text: str
              ) -> int | None:  # fmt: skip
        """A pool's min-free, from a listen entry's `pool` and `min-free`; None: no pool."""
        pool = self.nodes.bool(rest["pool"][1], "pool") if "pool" in rest else False
        key, value = rest.get("min-free", (None, None))
        found = 1 if value is None else self.nodes.scalar(value)
        problem = None
        if key is not None and not pool:
            value, problem = key, "'min-free' applies to a pool only (add 'pool: true')"
        elif isinstance(found, bool) or not isinstance(found, int) or found < 1:
            problem = f"'min-free' must be a number of ports, 1 or more, got {found!r}"
        elif pool and (parts.first is None or parts.last is None):
            value = rest["pool"][1]
            problem = f"'{text}': a pool needs its ports written out (49152-65535/udp), not %i"
        elif pool and parts.first is not None and parts.last is not None:
            size = parts.last - parts.first + 1
            if found > size:
                problem = f"'min-free' is {found}, but the pool '{text}' has {size} port(s)"
        if problem is not None:
            self.nodes.report(value or rest["pool"][1], "pool", problem)
            raise Invalid
        return found if pool else None

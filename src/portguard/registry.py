"""Registry v1: YAML files -> frozen dataclasses, with a file:line:col for every problem.

Pure: reads only the files it is given. Parsing works on YAML's node tree rather than on
loaded Python objects, so every value keeps its position and a port written as `8080`
is read from its source text, never through YAML 1.1's number rules.
"""

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from portguard.claims import Claim, ClaimSyntaxError, ListenParts, make_claim, parse_listen
from portguard.timespan import TimespanError, parse_timespan_ms
from portguard.unitname import UnitNameKind, split_instance, unit_name_kind, unit_name_problem

REGISTRY_DIR = Path("/etc/portguard")
VERSION = 1
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Mode(StrEnum):
    ENFORCE = "enforce"  # the guard runs and its failure blocks the start
    WARN = "warn"  # the guard runs, its failure is logged and ignored
    AUDIT = "audit"  # no guard; the claim is only audited


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Location:
    path: str
    line: int = 0  # 1-based; 0 when the problem is the file as a whole
    column: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}" if self.line else self.path


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    location: Location
    message: str
    rule: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.rule}]"


@dataclass(frozen=True, slots=True)
class Options:
    """Settings a unit inherits from `defaults` and may override."""

    wait_ms: int = 10_000
    mode: Mode = Mode.ENFORCE
    reuseaddr: bool = True
    reuseport: bool = False
    v6only: bool = False
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Listen:
    """One entry of a unit's `listen:` list, with the socket options it is bound with."""

    text: str
    location: Location
    parts: ListenParts
    v6only: bool
    reuseaddr: bool
    reuseport: bool

    @property
    def is_template(self) -> bool:
        return self.parts.first is None

    def claim(self, instance: str | None = None) -> Claim:
        """The concrete claim; raises ClaimSyntaxError if `%i` gets an instance that is no port."""
        return make_claim(
            self.parts,
            v6only=self.v6only,
            reuseaddr=self.reuseaddr,
            reuseport=self.reuseport,
            instance=instance,
        )


@dataclass(frozen=True, slots=True)
class UnitEntry:
    name: str
    location: Location
    listen: tuple[Listen, ...]
    wait_ms: int
    mode: Mode
    owner: str | None = None
    description: str | None = None
    via: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registry:
    units: Mapping[str, UnitEntry] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def entry_for(self, unit: str) -> tuple[UnitEntry, str | None] | None:
        """The entry that governs UNIT and the template instance, if any (exact name first)."""
        entry = self.units.get(unit)
        if entry is not None:
            return entry, split_instance(unit)[1]
        template, instance = split_instance(unit)
        if instance is None:
            return None
        entry = self.units.get(template)
        return None if entry is None else (entry, instance)


@dataclass(frozen=True, slots=True)
class RegistrySource:
    """The files of one registry: a main file whose `defaults` every file inherits, then drop-ins."""

    main: Path | None
    dropins: tuple[Path, ...] = ()

    @classmethod
    def installed(cls, root: Path = REGISTRY_DIR) -> "RegistrySource":
        main = root / "registry.yaml"
        dropin_dir = root / "registry.d"
        dropins = sorted(dropin_dir.glob("*.yaml")) if dropin_dir.is_dir() else []
        return cls(main if main.exists() or not dropins else None, tuple(dropins))

    @classmethod
    def from_paths(cls, paths: Sequence[Path]) -> "RegistrySource":
        """A directory is a registry root; files are taken as given, the first as the main one."""
        if len(paths) == 1 and (paths[0].is_dir() or paths[0] == REGISTRY_DIR):
            return cls.installed(paths[0])
        return cls(paths[0] if paths else None, tuple(paths[1:]))

    @property
    def files(self) -> tuple[Path, ...]:
        return ((self.main,) if self.main else ()) + self.dropins


@dataclass(frozen=True, slots=True)
class LoadResult:
    registry: Registry
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)


def load(source: RegistrySource) -> LoadResult:
    """Parse and merge every file of SOURCE; problems come back as findings, never raised."""
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
                findings.append(_error(entry.location, "duplicate-unit",
                                       f"{entry.name} is already defined at {first.location}"))
                continue
            units[entry.name] = entry
    registry = Registry(units, tuple(str(p) for p in source.files))
    return LoadResult(registry, tuple(findings))


def _error(location: Location, rule: str, message: str) -> Finding:
    return Finding(Severity.ERROR, location, message, rule)


# --- one file ------------------------------------------------------------------------------

_TOP_KEYS = ("version", "defaults", "units")
_OPTION_KEYS = ("wait", "mode", "reuseaddr", "reuseport", "v6only")
_DEFAULT_KEYS = (*_OPTION_KEYS, "owner")
_UNIT_KEYS = ("listen", "owner", "description", "via", *_OPTION_KEYS)
_LISTEN_KEYS = ("port", "v6only", "reuseaddr", "reuseport")
_GUARDABLE_TYPES = ("service", "socket")


@dataclass(slots=True)
class _ParsedFile:
    defaults: Options
    units: list[UnitEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


class _Invalid(Exception):
    """A value that cannot be used; already reported as a finding."""


class _FileParser:
    def __init__(self, path: Path, inherited: Options) -> None:
        self.path = path
        self.result = _ParsedFile(inherited)
        self.constructor = yaml.constructor.SafeConstructor()

    def parse(self) -> _ParsedFile:
        root = self._compose()
        if root is not None:
            self._document(root)
        self.result.findings.sort(key=lambda f: (f.location.line, f.location.column))
        return self.result

    # Reporting.
    def _at(self, node: yaml.Node, offset: int = 0) -> Location:
        mark = node.start_mark
        # A quoted scalar starts at its quote; point inside it.
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
        column = mark.column + 1 + offset + (1 if quoted and offset else 0)
        return Location(str(self.path), mark.line + 1, column)

    def _report(self, node: yaml.Node | None, rule: str, message: str,
                severity: Severity = Severity.ERROR, offset: int = 0) -> None:
        location = self._at(node, offset) if node is not None else Location(str(self.path))
        self.result.findings.append(Finding(severity, location, message, rule))

    # Reading and YAML.
    def _compose(self) -> yaml.Node | None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self._report(None, "unreadable", f"cannot read: {exc.strerror or exc}")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            self.result.findings.append(_error(
                Location(str(self.path), line, column), "encoding",
                f"byte 0x{data[exc.start]:02x} is not UTF-8 (a registry is UTF-8 text)"))
            return None
        try:
            root: yaml.Node | None = yaml.compose(text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            self._yaml_error(exc)
            return None
        except yaml.YAMLError as exc:
            self._reader_error(text, exc)
            return None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
            self._report(None, "empty", "the file is empty (expected a mapping with 'version: 1')")
            return None
        return root

    def _yaml_error(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        location = (Location(str(self.path), mark.line + 1, mark.column + 1) if mark
                    else Location(str(self.path)))
        self.result.findings.append(_error(location, "yaml", f"invalid YAML: {problem}"))

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
        self.result.findings.append(_error(
            location, "yaml", f"invalid YAML: {what} that YAML does not allow (binary data?)"))

    def _pairs(self, node: yaml.Node, allowed: Sequence[str] | None,
               where: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """The key/value nodes of a mapping; reports non-text, duplicate and unknown keys."""
        seen: dict[str, yaml.Node] = {}
        assert isinstance(node, yaml.MappingNode)
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._report(key_node, "merge-key",
                             "merge keys (<<) are not supported; use 'defaults:' instead")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._report(key_node, "type", f"expected a key name in {where}")
                continue
            key = key_node.value
            if key in seen:
                self._report(key_node, "duplicate-key",
                             f"'{key}' appears twice in {where} (first at line "
                             f"{seen[key].start_mark.line + 1})")
                continue
            seen[key] = key_node
            if allowed is not None and key not in allowed:
                self._unknown_key(key_node, key, allowed, where)
                continue
            yield key, key_node, value_node

    def _unknown_key(self, node: yaml.Node, key: str, allowed: Sequence[str], where: str) -> None:
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (expected one of: {', '.join(allowed)})"
        self._report(node, "unknown-key", f"unknown key '{key}' in {where}{hint}")

    # Typed values.
    def _expect_mapping(self, node: yaml.Node, what: str, *, null_ok: bool = False) -> bool:
        if isinstance(node, yaml.MappingNode):
            return True
        if null_ok and node.tag.endswith(":null"):
            return False
        self._report(node, "type", f"{what} must be a mapping, got {self._describe(node)}")
        raise _Invalid

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return node
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self._report(node, "type", f"cannot read this value: {problem}")
            raise _Invalid from None

    def _describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        tag = node.tag.rpartition(":")[2]
        names = {"null": "nothing (null)", "bool": f"the boolean {node.value}",
                 "int": f"the number {node.value}", "float": f"the number {node.value}"}
        return names.get(tag, f"'{node.value}'")

    def _bool(self, node: yaml.Node, key: str) -> bool:
        value = self._scalar(node)
        if isinstance(value, bool):
            return value
        self._report(node, "type", f"'{key}' must be true or false, got {self._describe(node)}")
        raise _Invalid

    def _text(self, node: yaml.Node, key: str) -> str:
        value = self._scalar(node)
        if isinstance(value, str) and value.strip():
            return value
        self._report(node, "type", f"'{key}' must be non-empty text, got {self._describe(node)}")
        raise _Invalid

    def _wait(self, node: yaml.Node) -> int:
        value = self._scalar(node)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self._report(node, "type",
                         f"'wait' must be a time span such as 10s, got {self._describe(node)}")
            raise _Invalid
        try:
            ms = parse_timespan_ms(str(value))
        except TimespanError as exc:
            self._report(node, "timespan", str(exc))
            raise _Invalid from None
        return ms

    def _mode(self, node: yaml.Node) -> Mode:
        value = self._scalar(node)
        try:
            return Mode(value)
        except ValueError:
            self._report(node, "type", f"'mode' must be enforce, warn or audit, "
                                       f"got {self._describe(node)}")
            raise _Invalid from None

    def _options(self, node: yaml.Node, base: Options, allowed: Sequence[str],
                 where: str) -> tuple[Options, dict[str, tuple[yaml.Node, yaml.Node]]]:
        """Options set in a mapping over BASE; returns the keys it did not handle."""
        changes: dict[str, Any] = {}
        rest: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        readers = {"wait": ("wait_ms", self._wait), "mode": ("mode", self._mode),
                   "owner": ("owner", lambda n: self._text(n, "owner"))}
        for key, key_node, value_node in self._pairs(node, allowed, where):
            try:
                if key in readers:
                    attr, read = readers[key]
                    changes[attr] = read(value_node)
                elif key in ("reuseaddr", "reuseport", "v6only"):
                    changes[key] = self._bool(value_node, key)
                else:
                    rest[key] = (key_node, value_node)
            except _Invalid:
                continue
        return replace(base, **changes), rest

    # The document.
    def _document(self, root: yaml.Node) -> None:
        try:
            self._expect_mapping(root, "the top level of a registry")
        except _Invalid:
            return
        top = {key: (k, v) for key, k, v in self._pairs(root, _TOP_KEYS, "the top level")}
        self._version(root, top.get("version"))
        if "defaults" in top:
            self._defaults(top["defaults"][1])
        if "units" in top:
            self._units(top["units"][1])

    def _version(self, root: yaml.Node, pair: tuple[yaml.Node, yaml.Node] | None) -> None:
        if pair is None:
            self._report(root, "version", "missing 'version: 1' at the top level")
            return
        node = pair[1]
        if node.tag.endswith(":int") and node.value.strip() == str(VERSION):
            return
        shown = node.value if isinstance(node, yaml.ScalarNode) else self._describe(node)
        self._report(node, "version", f"unsupported version '{shown}' "
                                      f"(expected 'version: {VERSION}')")

    def _defaults(self, node: yaml.Node) -> None:
        try:
            if not self._expect_mapping(node, "'defaults'", null_ok=True):
                return
        except _Invalid:
            return
        self.result.defaults, _ = self._options(node, self.result.defaults, _DEFAULT_KEYS,
                                                "'defaults'")

    def _units(self, node: yaml.Node) -> None:
        try:
            if not self._expect_mapping(node, "'units'", null_ok=True):
                return
        except _Invalid:
            return
        for name, key_node, value_node in self._pairs(node, None, "'units'"):
            try:
                self.result.units.append(self._unit(name, key_node, value_node))
            except _Invalid:
                continue

    def _unit_name(self, name: str, node: yaml.Node) -> None:
        problem = unit_name_problem(name)
        if problem is None and name.rpartition(".")[2] not in _GUARDABLE_TYPES:
            problem = (f"'{name}' cannot be guarded: expected a .service or .socket unit "
                       "(the guard runs from ExecStartPre=)")
        elif problem is not None:
            problem = f"'{name}' is not a valid unit name: {problem}"
        if problem is not None:
            self._report(node, "unit-name", problem)
            raise _Invalid

    def _unit(self, name: str, key_node: yaml.Node, node: yaml.Node) -> UnitEntry:
        self._unit_name(name, key_node)
        self._expect_mapping(node, f"unit {name}")
        options, rest = self._options(node, self.result.defaults, _UNIT_KEYS, f"unit {name}")
        template = unit_name_kind(name) is UnitNameKind.TEMPLATE
        listen: tuple[Listen, ...] = ()
        if "listen" not in rest:
            self._report(key_node, "missing-key", f"unit {name} needs 'listen' (its ports)")
        else:
            listen = self._listen_list(rest["listen"][1], options, template)
        via = self._via(rest["via"][1]) if "via" in rest else ()
        description = None
        if "description" in rest:
            try:
                description = self._text(rest["description"][1], "description")
            except _Invalid:
                pass
        return UnitEntry(name, self._at(key_node), listen, options.wait_ms, options.mode,
                         options.owner, description, via)

    def _via(self, node: yaml.Node) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self._report(node, "type", f"'via' must be a list of unit names, e.g. [nginx.socket], "
                                       f"got {self._describe(node)}")
            return ()
        names = []
        for item in node.value:
            value = self._scalar(item) if isinstance(item, yaml.ScalarNode) else None
            problem = (unit_name_problem(value) if isinstance(value, str)
                       else "expected a unit name")
            if problem is not None:
                self._report(item, "unit-name", f"'via' entry {self._describe(item)} is not a "
                                                f"valid unit name: {problem}")
                continue
            assert isinstance(value, str)
            names.append(value)
        return tuple(names)

    def _listen_list(self, node: yaml.Node, options: Options, template: bool) -> tuple[Listen, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self._report(node, "type", f"'listen' must be a list such as [8080/tcp], "
                                       f"got {self._describe(node)}")
            return ()
        if not node.value:
            self._report(node, "type", "'listen' is empty (expected at least one port)")
        listens = []
        for item in node.value:
            try:
                listens.append(self._listen(item, options, template))
            except _Invalid:
                continue
        return tuple(listens)

    def _listen(self, node: yaml.Node, options: Options, template: bool) -> Listen:
        text_node = node
        if isinstance(node, yaml.MappingNode):
            options, rest = self._options(node, options, _LISTEN_KEYS, "a listen entry")
            if "port" not in rest:
                self._report(node, "missing-key", "a listen entry mapping needs 'port'")
                raise _Invalid
            text_node = rest["port"][1]
        if not isinstance(text_node, yaml.ScalarNode) or text_node.tag.rpartition(":")[2] not in (
            "str", "int"
        ):
            self._report(text_node, "type",
                         f"expected a port such as 8080/tcp, got {self._describe(text_node)}")
            raise _Invalid
        # The source text, not YAML's reading of it: `1:80` must not become sexagesimal 140.
        text = text_node.value
        try:
            parts = parse_listen(text)
        except ClaimSyntaxError as exc:
            self._report(text_node, "listen", f"'{text}': {exc.message}", offset=exc.offset)
            raise _Invalid from None
        if parts.first is None and not template:
            self._report(text_node, "listen",
                         f"'{text}': %i is only allowed in a template unit (name@.service)")
            raise _Invalid
        return Listen(text, self._at(text_node), parts, options.v6only, options.reuseaddr,
                      options.reuseport)

"""The registry as data: units, their listen entries and options, and where they came from.

Pure dataclasses with no YAML: model.py builds them from the files, compiled.py from the
compiled form the hot path keeps in /run/portguard, so a busy port's check, `why` and
`audit` need no YAML parser.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from portguard.freepath.trust import REGISTRY_DIR as _REGISTRY_DIR
from portguard.freepath.trust import registry_files
from portguard.registry.claims import Claim, ListenParts, make_claim
from portguard.registry.findings import Finding, Location, Severity
from portguard.registry.unitname import split_instance

REGISTRY_DIR = Path(_REGISTRY_DIR)
VERSION = 1


class Mode(StrEnum):
    ENFORCE = "enforce"  # the guard runs and its failure blocks the start
    WARN = "warn"  # the guard runs, its failure is logged and ignored
    AUDIT = "audit"  # no guard; the claim is only audited


@dataclass(frozen=True, slots=True)
class Options:
    """Settings a unit inherits from `defaults` and may override."""

    wait_ms: int = 10_000
    mode: Mode = Mode.ENFORCE
    reuseaddr: bool = True
    reuseport: bool = False
    v6only: bool = False
    freebind: bool = False
    owner: str | None = None
    # A UDP socket shares its port only when its unit or its listen entry says so: the
    # defaults' reuseaddr/reuseport are TCP habits, and a UDP probe that shares by mistake
    # would call a held port free.
    udp_reuseaddr: bool = False
    udp_reuseport: bool = False


@dataclass(frozen=True, slots=True)
class Listen:
    """One entry of a unit's `listen:` list, with the socket options it is bound with."""

    text: str
    location: Location
    parts: ListenParts
    v6only: bool
    reuseaddr: bool
    reuseport: bool
    freebind: bool = False
    pool: int | None = None  # a pool's min-free (Claim.pool); None: bound whole at start
    # The keys it uses that not every release knows (keys.SINCE), for `lint --target-version`;
    # not kept in the compiled form, which `check` reads.
    newer_keys: tuple[str, ...] = field(default=(), compare=False)

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
            freebind=self.freebind,
            pool=self.pool,
        )


@dataclass(frozen=True, slots=True)
class UnitEntry:
    """One unit of the registry: its claims and how it is guarded."""

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
    """The registry's units, and the files they were read from."""

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
    """One registry's files: a main file whose `defaults` all files inherit, then drop-ins."""

    main: Path | None
    dropins: tuple[Path, ...] = ()

    @classmethod
    def installed(cls, root: Path = REGISTRY_DIR) -> "RegistrySource":
        # The same listing as the hot path's, so both always read the same files (editors'
        # hidden lock and backup files such as .#x.yaml are not part of a registry).
        files = [Path(f) for f in registry_files(str(root))]
        main = root / "registry.yaml"
        if files and files[0] == main:
            return cls(main, tuple(files[1:]))
        return cls(None if files else main, tuple(files))

    @classmethod
    def from_paths(cls, paths: Sequence[Path]) -> "RegistrySource":
        """A directory is a registry root; files are taken as given, the first as the main one."""
        if len(paths) == 1 and (paths[0].is_dir() or paths[0] == REGISTRY_DIR):
            return cls.installed(paths[0])
        return cls(paths[0] if paths else None, tuple(paths[1:]))

    @classmethod
    def containing(cls, path: Path) -> "RegistrySource":
        """The whole registry PATH is part of: `registry.yaml` or `registry.d/*.yaml` stand
        for their root (both files read together, so cross-file overlaps are seen); any
        other file is a registry of its own."""
        if path.name == "registry.yaml":
            return cls.installed(path.parent)
        if path.parent.name == "registry.d":
            return cls.installed(path.parent.parent)
        return cls(path)

    @property
    def files(self) -> tuple[Path, ...]:
        return ((self.main,) if self.main else ()) + self.dropins


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A registry as read, with what lint found in it."""

    registry: Registry
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

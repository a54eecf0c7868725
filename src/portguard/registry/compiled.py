"""The registry in marshal's types, for the compiled form in /run/portguard.

`check` on a busy port, `why` and `audit` read this instead of parsing and validating the
YAML again (a 1,000-unit registry: ~100 ms of YAML against a few ms here). It is written only
from a registry that passed validation, and believed only while the files' hash matches
(freepath.trust.digest), so it can never be stale or unvalidated.
"""

import ipaddress
from collections.abc import Iterator, Mapping
from typing import cast

from portguard.registry.claims import ListenParts, Proto
from portguard.registry.entries import Listen, Mode, Registry, UnitEntry
from portguard.registry.findings import Location

# Bumped whenever the shape below changes; a cache of another shape is not believed.
SHAPE = 2

_Where = tuple[str, int, int]
# text, location, address, first and last port, proto, v6only, reuseaddr, reuseport, freebind,
# a pool's min-free
_Listen = tuple[
    str, _Where, str | None, int | None, int | None, str, bool, bool, bool, bool, int | None
]
# name, location, wait (ms), mode, owner, description, via, listen entries
_Unit = tuple[str, _Where, int, str, str | None, str | None, tuple[str, ...], tuple[_Listen, ...]]
_UNIT_FIELDS = 8
_Plain = tuple[int, tuple[str, ...], tuple[_Unit, ...]]


def _location(location: Location) -> tuple[str, int, int]:
    return (location.path, location.line, location.column)


def plain(registry: Registry) -> tuple[object, ...]:
    """REGISTRY as nested tuples of str, int, bool and None."""
    units = tuple(
        (
            entry.name, _location(entry.location), entry.wait_ms, str(entry.mode), entry.owner,
            entry.description, entry.via,
            tuple(
                (listen.text, _location(listen.location),
                 None if listen.parts.address is None else str(listen.parts.address),
                 listen.parts.first, listen.parts.last, str(listen.parts.proto),
                 listen.v6only, listen.reuseaddr, listen.reuseport, listen.freebind,
                 listen.pool)
                for listen in entry.listen
            ),
        )
        for entry in registry.units.values()
    )  # fmt: skip
    return (SHAPE, registry.files, units)


def registry_of(data: object) -> Registry | None:
    """The Registry PLAIN made, or None when DATA is not of its shape."""
    try:
        shape, files, units = cast(_Plain, data)
        if shape != SHAPE:
            return None
        raw = {}
        for unit in units:
            if not isinstance(unit, tuple) or len(unit) != _UNIT_FIELDS:
                return None
            raw[unit[0]] = unit
        return Registry(_Units(raw), tuple(files))
    except (TypeError, ValueError):
        return None


class _Units(Mapping[str, UnitEntry]):
    """The units, each made a UnitEntry when first asked for: a held `check` needs one of a
    1,000-unit registry, and building them all cost it ~5 ms."""

    __slots__ = ("_made", "_raw")

    def __init__(self, raw: dict[str, _Unit]) -> None:
        self._raw = raw
        self._made: dict[str, UnitEntry] = {}

    def __getitem__(self, name: str) -> UnitEntry:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = _entry(self._raw[name])
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _entry(data: _Unit) -> UnitEntry:
    name, location, wait_ms, mode, owner, description, via, listens = data
    return UnitEntry(
        name, Location(*location), tuple(_listen(listen) for listen in listens),
        wait_ms, Mode(mode), owner, description, tuple(via),
    )  # fmt: skip


def _listen(data: _Listen) -> Listen:
    text, location, address, first, last, proto, v6only, reuseaddr, reuseport, freebind, pool = data
    host = None if address is None else ipaddress.ip_address(address)
    parts = ListenParts(host, first, last, Proto(proto))
    return Listen(text, Location(*location), parts, v6only, reuseaddr, reuseport, freebind, pool)

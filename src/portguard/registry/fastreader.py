"""The registry's usual shape, read fast for the generator at boot: it vouches or declines.

The full reader (model.py, then lint.py) keeps a location for every value and explains
every problem; importing it and reading 1,000 units costs the generator several times the
interpreter's own start, at every boot. This reader walks libyaml's event stream once and
accepts only what it can judge completely: the known keys, untagged scalars typed by YAML's
own resolver, no anchors or aliases, ports written as numbers or ranges (on an IPv4 or a
bracketed IPv6 address at most), valid unit names, and no two units' claims that share a
port unless both are on specific, different addresses (so there is no overlap to judge) or
one lists the other in its `via` (a socket unit and its service: lint passes them as well).
Anything else, or anything it is unsure of, makes it decline (None), and the generator asks
the full reader, which then decides and explains. So it never vouches for a registry `lint`
rejects; tests hold the two readers to that (a 20,000-input fuzz corpus among them), and to
the same units, modes and locations.

It imports PyYAML (for libyaml's parser and YAML's resolver) and the unit-name and time-span
validators, and never builds a node tree.
"""

import heapq
import re
from collections.abc import Callable, Iterator

import yaml

from portguard.registry.keys import BOOL_KEYS, DEFAULT_KEYS, LISTEN_KEYS, UNIT_KEYS
from portguard.registry.timespan import parse_timespan_ms
from portguard.registry.unitname import guard_dir_problem, unit_name_problem

# (unit, mode, file:line:col of its key), as the full reader gives them.
Unit = tuple[str, str, str]
# A concrete claim's protocol, first and last port, unit, and its address in a canonical
# text (None: every address, or a family's wildcard).
_Claim = tuple[str, int, int, str, str | None]

_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "bool", "null"))
_MODES = ("enforce", "warn", "audit")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# A subset of what claims.parse_listen accepts: [ADDRESS:]PORT[-PORT][/tcp|udp], or %i for
# the port; ADDRESS is IPv4 in the strict dotted form, or anything in brackets for ipaddress.
_LISTEN = re.compile(
    rf"(?:(?P<address>{_OCTET}(?:\.{_OCTET}){{3}}):|\[(?P<v6>[0-9A-Fa-f:.]+)\]:)?"
    r"(?:(?P<first>[1-9][0-9]{0,4})(?:-(?P<last>[1-9][0-9]{0,4}))?|(?P<template>%i))"
    r"(?:/(?P<proto>tcp|udp))?"
)
# Units on one identical claim past which the full reader decides at once: a socket unit and
# its service share one, two mDNS responders another; dozens only come from a template gone
# wrong, and reading all of it first would cost the generator twice (issue 24).
_CROWD = 8


class _Decline(Exception):
    """Not a shape this reader can judge: the full reader decides."""


def read(main: str | None, dropins: list[str]) -> list[Unit] | None:
    """Every unit of the registry with its mode and location, or None to ask the full reader."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is None:  # without libyaml this reader would be no faster
        return None
    units: dict[str, Unit] = {}
    claims: list[_Claim] = []
    via: dict[str, set[str]] = {}
    base_mode = "enforce"
    try:
        for path in ([main] if main else []) + dropins:
            parsed = _File(path, loader, base_mode)
            parsed.read()
            for name, unit in parsed.units.items():
                if name in units:
                    raise _Decline  # a unit in two files: lint's duplicate-unit
                units[name] = unit
            claims += parsed.claims
            via.update(parsed.via)
            if path == main:
                base_mode = parsed.mode
    except (_Decline, yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    return list(units.values()) if _apart(claims, via) else None


def _apart(claims: list[_Claim], via: dict[str, set[str]]) -> bool:
    """Whether no two units' claims overlap: on a shared port, both on specific addresses,
    and different ones, unless one unit lists the other in its VIA. Claims of one unit may
    share one (at most a warning).

    A sweep over the ports with the open claims indexed by address, so 2,000 units on port
    443 at distinct addresses cost no more than 2,000 on distinct ports.
    """
    claims.sort(key=lambda c: (c[0], c[1]))
    ending: list[tuple[int, int]] = []  # (last port, index) of the open claims: a heap
    wildcards: dict[str, int] = {}  # unit -> its open claims on every address
    units: dict[str, int] = {}  # unit -> its open claims
    by_address: dict[str, dict[str, int]] = {}  # address -> unit -> open claims there
    proto = None
    for index, (kind, first, last, unit, address) in enumerate(claims):
        if kind != proto:  # TCP and UDP never collide
            proto, ending, wildcards, units, by_address = kind, [], {}, {}, {}
        while ending and ending[0][0] < first:
            _, gone = heapq.heappop(ending)
            _, _, _, gone_unit, gone_address = claims[gone]
            _drop(units, gone_unit)
            _drop(wildcards if gone_address is None else by_address[gone_address], gone_unit)
        near = (units,) if address is None else (wildcards, by_address.get(address, {}))
        if any(_others(open_, unit) and not _related(open_, unit, via) for open_ in near):
            return False
        heapq.heappush(ending, (last, index))
        units[unit] = units.get(unit, 0) + 1
        place = wildcards if address is None else by_address.setdefault(address, {})
        place[unit] = place.get(unit, 0) + 1
    return True


def _others(counts: dict[str, int], unit: str) -> bool:
    """Whether COUNTS holds a unit other than UNIT."""
    return len(counts) > (1 if unit in counts else 0)


def _related(counts: dict[str, int], unit: str, via: dict[str, set[str]]) -> bool:
    """Whether every unit in COUNTS is UNIT or lists it in its `via`, or is listed in UNIT's."""
    own = via.get(unit, set())
    return all(other == unit or other in own or unit in via.get(other, ()) for other in counts)


def _drop(counts: dict[str, int], unit: str) -> None:
    if counts[unit] == 1:
        del counts[unit]
    else:
        counts[unit] -= 1


class _File:
    """One file's events, read against the v1 schema's usual shape."""

    def __init__(self, path: str, loader: type, base_mode: str) -> None:
        self.path = path
        self.loader = loader
        self.mode = base_mode  # this file's `defaults: mode`, over the inherited one
        self.units: dict[str, Unit] = {}
        self.claims: list[_Claim] = []
        # (proto, first, last, address) -> the last unit that claimed it, and how many did.
        self.crowds: dict[tuple[str, int, int, str | None], tuple[str, int]] = {}
        self.via: dict[str, set[str]] = {}  # unit -> the units its `via` lists
        self.resolve = yaml.resolver.Resolver().resolve
        self.unit = ""  # the unit being read
        self.template = False  # whether it is a template (name@.service)
        self.parser: yaml.CSafeLoader | None = None

    def read(self) -> None:
        with open(self.path, "rb") as handle:
            text = handle.read().decode("utf-8")
        self.parser = self.loader(text)
        try:
            self._document()
        finally:
            self.parser.dispose()

    def _document(self) -> None:
        self._expect(yaml.StreamStartEvent)
        start = self._expect(yaml.DocumentStartEvent)
        if getattr(start, "version", None) is not None or getattr(start, "tags", None):
            raise _Decline  # %YAML and %TAG directives
        own_modes: dict[str, str | None] = {}
        top = set()
        for key, _ in self._pairs(("version", "defaults", "units")):
            top.add(key)
            if key == "version":
                tag, value = self._scalar()
                if tag != _INT or value.strip() != "1":
                    raise _Decline
            elif key == "defaults":
                if not self._null():
                    self._options(DEFAULT_KEYS, self._set_mode)
            elif not self._null():
                for name, event in self._open_pairs(None):
                    own_modes[name] = self._unit(name)
                    self.units[name] = (name, "", self._location(event))
        if "version" not in top:
            raise _Decline
        self._expect(yaml.DocumentEndEvent)
        self._expect(yaml.StreamEndEvent)
        # `defaults` apply to the file's units wherever they stand in it.
        for name, (_, _, location) in self.units.items():
            self.units[name] = (name, own_modes[name] or self.mode, location)

    def _set_mode(self, mode: str) -> None:
        self.mode = mode

    # Events.
    def _next(self) -> yaml.Event:
        assert self.parser is not None
        # None after the stream's end. An alias is never the event a caller expects, so it
        # declines there. An anchor declines too: YAML's composer refuses one defined twice,
        # which this event stream alone cannot see, and a reader that vouched for it would
        # guard units that `check` then refuses.
        event = self.parser.get_event()
        if event is None:
            raise _Decline
        if getattr(event, "tag", None) is not None:  # explicit tags: the full reader's job
            raise _Decline
        if getattr(event, "anchor", None) is not None:
            raise _Decline
        return event

    def _expect(self, kind: type[yaml.Event]) -> yaml.Event:
        event = self._next()
        if not isinstance(event, kind):
            raise _Decline
        return event

    def _scalar(self, event: yaml.Event | None = None) -> tuple[str, str]:
        """The next scalar's resolved tag and text, as the composer would type it."""
        event = event or self._next()
        if not isinstance(event, yaml.ScalarEvent):
            raise _Decline
        tag: str = self.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        return tag, event.value

    def _null(self) -> bool:
        """Whether the next value is a null scalar; otherwise it must be a mapping, now open."""
        event = self._next()
        if isinstance(event, yaml.MappingStartEvent):
            return False
        if isinstance(event, yaml.ScalarEvent) and self._scalar(event)[0] == _NULL:
            return True
        raise _Decline

    def _pairs(self, allowed: tuple[str, ...] | None) -> Iterator[tuple[str, yaml.ScalarEvent]]:
        """Keys of the open mapping; the caller reads each value before asking for the next."""
        if not isinstance(self._next(), yaml.MappingStartEvent):
            raise _Decline
        yield from self._open_pairs(allowed)

    def _open_pairs(
        self, allowed: tuple[str, ...] | None
    ) -> Iterator[tuple[str, yaml.ScalarEvent]]:
        seen = set()
        while True:
            event = self._next()
            if isinstance(event, yaml.MappingEndEvent):
                return
            if not isinstance(event, yaml.ScalarEvent):
                raise _Decline
            key = event.value
            # A merge key (<<) is neither a known key nor a unit name, so it declines here too.
            if key in seen or (allowed is not None and key not in allowed):
                raise _Decline
            seen.add(key)
            yield key, event

    def _location(self, event: yaml.ScalarEvent) -> str:
        mark = event.start_mark
        assert mark is not None  # libyaml marks every event
        # As the full reader: a quoted scalar is located inside its quote.
        quoted = event.style in ("'", '"')
        return f"{self.path}:{mark.line + 1}:{mark.column + 1 + quoted}"

    # The schema.
    def _options(self, allowed: tuple[str, ...], set_mode: Callable[[str], None]) -> set[str]:
        """Reads an open mapping of `defaults` or a unit; returns the keys it has."""
        seen = set()
        for key, _ in self._open_pairs(allowed):
            seen.add(key)
            if key in ("owner", "description"):
                self._text()
            elif key == "mode":
                tag, value = self._scalar()
                if tag != _STR or value not in _MODES:
                    raise _Decline
                set_mode(value)
            elif key == "wait":
                self._wait()
            elif key in BOOL_KEYS:
                self._bool()
            elif key == "listen":
                self._listen_list()
            elif key == "via":
                self._via()
        return seen

    def _unit(self, name: str) -> str | None:
        """Reads a unit's mapping; returns its own mode, if it sets one."""
        if unit_name_problem(name) or guard_dir_problem(name):
            raise _Decline
        if name.rpartition(".")[2] not in ("service", "socket"):
            raise _Decline
        self.unit = name
        self.template = name.rpartition(".")[0].endswith("@") and name.count("@") == 1
        if not isinstance(self._next(), yaml.MappingStartEvent):
            raise _Decline
        modes: list[str] = []
        if "listen" not in self._options(UNIT_KEYS, modes.append):
            raise _Decline
        return modes[0] if modes else None

    def _text(self) -> None:
        tag, value = self._scalar()
        if tag != _STR or not value.strip():
            raise _Decline

    def _wait(self) -> None:
        tag, value = self._scalar()
        # The full reader passes str(value) on: the same text for a string or a plain decimal.
        if tag not in (_STR, _INT) or (tag == _INT and not _DECIMAL.fullmatch(value)):
            raise _Decline
        try:
            parse_timespan_ms(value)
        except Exception:
            raise _Decline from None

    def _via(self) -> None:
        if not isinstance(self._next(), yaml.SequenceStartEvent):
            raise _Decline
        listed = self.via.setdefault(self.unit, set())
        while not isinstance(event := self._next(), yaml.SequenceEndEvent):
            tag, value = self._scalar(event)
            if tag != _STR or unit_name_problem(value):
                raise _Decline
            listed.add(value)

    def _listen_list(self) -> None:
        if not isinstance(self._next(), yaml.SequenceStartEvent):
            raise _Decline
        count = 0
        while not isinstance(event := self._next(), yaml.SequenceEndEvent):
            count += 1
            if not isinstance(event, yaml.MappingStartEvent):
                self._port(event)
                continue
            # The mapping form: `port:`, socket options and a pool's keys for this one claim.
            size: int | None = 0  # the port's: None for %i
            pool, min_free = False, None
            for key, _ in self._open_pairs(LISTEN_KEYS):
                if key == "port":
                    size = self._port()
                elif key == "min-free":
                    tag, value = self._scalar()
                    if tag != _INT or not _DECIMAL.fullmatch(value) or value == "0":
                        raise _Decline
                    min_free = int(value)
                elif key == "pool":
                    pool = self._bool()
                else:
                    self._bool()
            # The full reader's rules: min-free for a pool only, whose ports are written out.
            if size == 0 or (min_free is not None and not pool):
                raise _Decline
            if pool and (size is None or (min_free or 1) > size):
                raise _Decline
        if not count:
            raise _Decline

    def _bool(self) -> bool:
        tag, value = self._scalar()
        if tag != _BOOL:
            raise _Decline
        return value.lower() in ("true", "yes", "on")

    def _port(self, event: yaml.Event | None = None) -> int | None:
        """One listen string: its source text, as the full reader takes it. Its number of
        ports; None for a template's %i."""
        tag, text = self._scalar(event)
        found = _LISTEN.fullmatch(text) if tag in (_STR, _INT) else None
        if found is None:
            raise _Decline
        proto = found["proto"] or "tcp"
        address: str | None = found["address"]
        if found["v6"] is not None:
            import ipaddress  # noqa: PLC0415 - only for the registries that need it

            try:
                parsed = ipaddress.IPv6Address(found["v6"])
            except ValueError:
                raise _Decline from None
            if parsed.ipv4_mapped is not None:  # v6only decides whether it can bind at all
                raise _Decline
            no_tcp = parsed.is_multicast
            address = None if parsed.is_unspecified else f"[{parsed.compressed}]"
        else:  # multicast or the broadcast address: TCP cannot listen there
            octets = (address or "0.0.0.0").split(".")
            no_tcp = 224 <= int(octets[0]) <= 239 or octets == ["255"] * 4
            if address == "0.0.0.0":
                address = None  # the strict dotted form: one text per address
        if found["template"]:
            if not self.template:
                raise _Decline
            return None
        first = int(found["first"])
        last = int(found["last"] or first)
        if not first <= last <= 65535 or (proto == "tcp" and no_tcp):
            raise _Decline
        key = (proto, first, last, address)
        holder, holders = self.crowds.get(key, ("", 0))
        if holder != self.unit:  # a unit's claims are read one after another
            if holders == _CROWD:
                raise _Decline
            self.crowds[key] = (self.unit, holders + 1)
        self.claims.append((proto, first, last, self.unit, address))
        return last - first + 1

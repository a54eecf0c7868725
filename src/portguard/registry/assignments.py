"""The registry as concrete assignments: which unit each port is given to.

Pure: `why` asks who may hold a port, `audit` walks every claim, templates expanded for
the instances that exist.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from portguard.registry.claims import Claim, ClaimSyntaxError, overlaps
from portguard.registry.entries import Listen, Registry, UnitEntry
from portguard.registry.unitname import split_instance


@dataclass(frozen=True, slots=True)
class Assignment:
    """One claim given to one unit; for a template, to one instance of it."""

    unit: str
    entry: UnitEntry
    listen: Listen
    claim: Claim

    @property
    def team(self) -> str | None:
        return self.entry.owner

    @property
    def holders(self) -> tuple[str, ...]:
        """The units whose sockets count as this unit's: itself and its `via`."""
        return (self.unit, *self.entry.via)


def assignments(registry: Registry, instances: Iterable[str] = ()) -> Iterator[Assignment]:
    """Every concrete claim, in registry order; a template's claims once per unit of
    INSTANCES that is one of its instances (a template with a `%i` port and no instance
    has no concrete claim).
    """
    by_template: dict[str, list[str]] = {}
    for name in sorted(set(instances)):
        template, instance = split_instance(name)
        if instance is not None:
            by_template.setdefault(template, []).append(name)
    for name, entry in registry.units.items():
        if not any(listen.is_template for listen in entry.listen):
            yield from _concrete(name, entry, None)
            continue
        for unit in by_template.get(name, []):
            yield from _concrete(unit, entry, split_instance(unit)[1])


def assigned(registry: Registry, target: Claim) -> list[Assignment]:
    """Who the registry gives TARGET to: every claim it overlaps. A `%i` port matches the
    instance named by the port (redis@6379.service for 6379).
    """
    found: list[Assignment] = []
    for name, entry in registry.units.items():
        instance = None
        unit = name
        if any(listen.is_template for listen in entry.listen):
            instance = str(target.first)
            unit = name.replace("@.", f"@{instance}.", 1)
        found.extend(a for a in _concrete(unit, entry, instance) if overlaps(a.claim, target))
    return found


def _concrete(unit: str, entry: UnitEntry, instance: str | None) -> Iterator[Assignment]:
    for listen in entry.listen:
        try:
            claim = listen.claim(instance)
        except ClaimSyntaxError:
            continue  # an instance that is no port has no claim for `%i`
        yield Assignment(unit, entry, listen, claim)

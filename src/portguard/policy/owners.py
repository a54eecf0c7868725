"""The attribution vocabulary: who owns a socket on a port. Stdlib only, so the policy and
the report can use it without loading pyroute2 or pystemd.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from portguard.host.occupants import Occupant
from portguard.host.processes import SocketOptions
from portguard.host.units import UnitFacts
from portguard.registry.localports import LocalPorts

if TYPE_CHECKING:  # a held check loads none of these for the words of its one owner
    from typing import Protocol

    from portguard.host.processes import Process
    from portguard.host.sessions import Session

# How every command says the census could not run, so a report can tell it from an empty one.
CENSUS_FAILED = "the kernel's socket table could not be read"


class OwnerKind(StrEnum):
    SERVICE = "service"
    SOCKET = "socket"
    SCOPE = "scope"
    SESSION = "session"
    USER_SERVICE = "user-service"
    CONTAINER = "container"
    MACHINE = "machine"  # a systemd-nspawn machine (systemd-machined)
    SELF = "self"
    TIME_WAIT = "time-wait"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a socket: a unit, a session, a container, the kernel (TIME-WAIT)."""

    kind: OwnerKind
    unit: str | None = None
    pid: int | None = None
    comm: str | None = None
    user: str | None = None
    container: str | None = None
    container_name: str | None = None
    cgroup: str | None = None
    activates: tuple[str, ...] = ()  # the service a socket unit starts
    pids: tuple[int, ...] = ()  # the processes holding the socket, when visible
    runtime: str | None = None  # a container's runtime (policy/runtimes.py)
    host_network: bool = False  # a container on the host's network, not published
    forwards_to: str | None = None  # the container address docker-proxy forwards to
    transient: bool = False  # a unit made at run time: nothing to disable

    @property
    def holder_pids(self) -> tuple[int, ...]:
        return self.pids or ((self.pid,) if self.pid else ())


@dataclass(frozen=True, slots=True)
class Holding:
    """A socket and its owner."""

    occupant: Occupant
    owner: Owner
    options: SocketOptions | None = None  # read from its holder; None: not known


@dataclass(frozen=True, slots=True)
class Attribution:
    """The census's sockets with their owners, and what could not be found out."""

    holdings: tuple[Holding, ...]
    gaps: tuple[str, ...] = ()  # what could not be found out, for the report
    facts: Mapping[str, UnitFacts] = field(default_factory=dict)  # every unit systemd told of
    census_failed: bool = False  # the socket table was not read: an empty census proves nothing
    local_ports: LocalPorts | None = None  # the kernel's ephemeral range and reserved ports


# --- what the words about an owner are made from (policy/kinds.py) ----------------------------


class Fix:
    """What a fix is for: the registered unit(s) that should have the port, and the port.
    (A plain class, as kinds.Kind: a held check makes the class at every start.)"""

    __slots__ = ("port", "proto", "unit")

    def __init__(self, unit: str, port: int, proto: str) -> None:
        self.unit = unit
        self.port = port
        self.proto = proto


if TYPE_CHECKING:

    class Occupying(Protocol):
        """What `why` knows of an owner on the port (policy/diagnosis.Occupancy)."""

        @property
        def owner(self) -> Owner: ...
        @property
        def unit(self) -> UnitFacts | None: ...
        @property
        def process(self) -> Process | None: ...
        @property
        def session(self) -> Session | None: ...
        @property
        def forwards_to(self) -> str | None: ...


Rows = list[tuple[str, str]]  # why's (label, text) rows


def container_label(owner: Owner) -> str | None:
    """`3f2a9c1b7d0e (web)`: the short id and the name, either alone when that is all known."""
    if owner.container and owner.container_name:
        return f"{owner.container[:12]} ({owner.container_name})"
    return owner.container[:12] if owner.container else owner.container_name

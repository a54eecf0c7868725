"""The census and attribution vocabulary: sockets on a port and who owns them. Stdlib only,
so the policy and the report can use it without loading pyroute2 or pystemd.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from portguard.host.units import UnitFacts
from portguard.registry.claims import Claim, IPAddress, Proto

# How every command says the census could not run, so a report can tell it from an empty one.
CENSUS_FAILED = "the kernel's socket table could not be read"
TCP_TIME_WAIT = 6
# ss(8)'s names, so what we print reads like what operators already know.
STATE_NAMES = {
    1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
    6: "TIME-WAIT", 7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN",
    11: "CLOSING", 12: "NEW-SYN-RECV",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Occupant:
    """A socket on a port, as the kernel reports it."""

    proto: Proto
    state: str
    address: IPAddress
    port: int
    peer: tuple[IPAddress, int] | None
    inode: int  # 0 for TIME-WAIT: no file holds it any more
    uid: int
    cgroup_id: int | None  # the cgroup the socket was created in; None for TIME-WAIT
    v6only: bool
    expires_ms: int | None  # TIME-WAIT: until the kernel drops it

    @property
    def is_time_wait(self) -> bool:
        return self.state == STATE_NAMES[TCP_TIME_WAIT]

    def as_claim(self) -> Claim:
        return Claim(self.proto, self.port, self.port, self.address, v6only=self.v6only)

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}/{self.proto}"


class OwnerKind(StrEnum):
    SERVICE = "service"
    SOCKET = "socket"
    SCOPE = "scope"
    SESSION = "session"
    USER_SERVICE = "user-service"
    CONTAINER = "container"
    SELF = "self"
    TIME_WAIT = "time-wait"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Owner:
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

    @property
    def holder_pids(self) -> tuple[int, ...]:
        return self.pids or ((self.pid,) if self.pid else ())


@dataclass(frozen=True, slots=True)
class Holding:
    occupant: Occupant
    owner: Owner


@dataclass(frozen=True, slots=True)
class Attribution:
    holdings: tuple[Holding, ...]
    gaps: tuple[str, ...] = ()  # what could not be found out, for the report
    facts: Mapping[str, UnitFacts] = field(default_factory=dict)  # every unit systemd told of
    census_failed: bool = False  # the socket table was not read: an empty census proves nothing

"""What the census finds: a socket on a port, as the kernel reports it, in ss(8)'s words.
Stdlib only, so the policy and the reports can name occupants without loading pyroute2;
host/sockets.py fills them from sock_diag.
"""

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from portguard.registry.claims import Claim, IPAddress, Proto, host_text

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
    # The kernel's id of the socket, unique while it lives; what sock_diag's destroy
    # notifications name (their inode is 0). 0: not known. Not part of equality.
    cookie: int = field(default=0, compare=False)

    @property
    def is_time_wait(self) -> bool:
        return self.state == STATE_NAMES[TCP_TIME_WAIT]

    def as_claim(self) -> Claim:
        return Claim(self.proto, self.port, self.port, self.address, v6only=self.v6only)

    def __str__(self) -> str:
        return f"{host_text(self.address)}:{self.port}/{self.proto}"


# A socket as sock_diag reports it, in plain types (host/sockets.py's rows, what the early
# census child sends its parent): proto ("tcp" or "udp"), state (its number), address, port,
# the peer's address and port (None, 0 when unconnected), inode, uid, cgroup id (None for
# TIME-WAIT), v6only, expires (ms, TIME-WAIT only), cookie.
Row = tuple[str, int, str, int, str | None, int, int, int, int | None, bool, int | None, int]


def from_rows(rows: Iterable[Sequence[object]]) -> list[Occupant]:
    """ROWS (each a Row, or the list JSON makes of one) as the policy reads them."""
    found = []
    for row in rows:
        proto, state, address, port, peer, peer_port = row[:6]
        inode, uid, cgroup_id, v6only, expires, cookie = row[6:]
        found.append(Occupant(
            Proto(str(proto)), STATE_NAMES.get(int(str(state)), str(state)),
            ipaddress.ip_address(str(address)), int(str(port)),
            None if peer is None else (ipaddress.ip_address(str(peer)), int(str(peer_port))),
            int(str(inode)), int(str(uid)), None if cgroup_id is None else int(str(cgroup_id)),
            bool(v6only), None if expires is None else int(str(expires)), int(str(cookie)),
        ))  # fmt: skip
    return found

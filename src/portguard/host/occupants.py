"""What the census finds: a socket on a port, as the kernel reports it, in ss(8)'s words.
Stdlib only, so the policy and the reports can name occupants without loading pyroute2;
host/sockets.py fills them from sock_diag.
"""

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

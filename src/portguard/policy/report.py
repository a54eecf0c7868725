"""A verdict as people and machines read it: the journal fields, the stderr line, the exit code."""

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.policy import runtimes
from portguard.policy.kinds import kind_of
from portguard.policy.owners import Fix, Owner, OwnerKind, container_label
from portguard.registry.claims import host_text
from portguard.registry.localports import LocalPorts

if TYPE_CHECKING:
    from portguard.policy.redirects import Taker


class Verdict(StrEnum):
    FREE = "free"
    RELEASED = "released"
    UNREGISTERED = "unregistered"
    UNASSIGNABLE = "unassignable"
    HELD = "held"
    REDIRECTED = "redirected"  # NAT sends the port's traffic elsewhere (DESIGN rule 5)
    PARTLY_REDIRECTED = "partly-redirected"  # some of it: a warning, the start goes ahead
    EXHAUSTED = "exhausted"  # a pool fewer than min-free of whose ports can be bound
    INTERNAL_ERROR = "internal-error"
    DRAIN_TIMEOUT = "drain-timeout"
    DENIED = "denied"
    CONFIG_ERROR = "config-error"


EXIT = {
    Verdict.FREE: Exit.OK,
    Verdict.RELEASED: Exit.OK,
    Verdict.UNREGISTERED: Exit.OK,
    Verdict.UNASSIGNABLE: Exit.NOHOST,
    Verdict.HELD: Exit.UNAVAILABLE,
    Verdict.REDIRECTED: Exit.UNAVAILABLE,
    Verdict.PARTLY_REDIRECTED: Exit.OK,
    Verdict.EXHAUSTED: Exit.UNAVAILABLE,
    Verdict.INTERNAL_ERROR: Exit.SOFTWARE,
    Verdict.DRAIN_TIMEOUT: Exit.TEMPFAIL,
    Verdict.DENIED: Exit.NOPERM,
    Verdict.CONFIG_ERROR: Exit.CONFIG,
}

# Fixed forever: the journal catalog and users' alerting match on these.
MESSAGE_ID = {
    Verdict.RELEASED: "d09f4f8eae5846a08a3fc4831b81a186",
    Verdict.UNREGISTERED: "ea38110f7b41499fbe7e2417b944d5ba",
    Verdict.UNASSIGNABLE: "f613cfddec4942798a50f3f468caf90e",
    Verdict.HELD: "d12e92fae08c4a5791aebc7c159078ed",
    Verdict.REDIRECTED: "3151251dc9cc4c22a56390d8cb01f8d5",
    Verdict.PARTLY_REDIRECTED: "ae60ba2c632847eabb640ac82414c743",
    Verdict.EXHAUSTED: "043fc7df49c1451ba7115f7a9aed4e50",
    Verdict.INTERNAL_ERROR: "8b4a5df3dc80473a9e661bc87a30e52f",
    Verdict.DRAIN_TIMEOUT: "841b50d89b87450288998a6c0b60b9f0",
    Verdict.DENIED: "eca52832466340798b793630d8477d99",
    Verdict.CONFIG_ERROR: "5b96e3b301884c05b0673a7076d0c3ab",
}

# syslog priorities: 3 err, 4 warning, 5 notice, 6 info.
PRIORITY = {
    Verdict.RELEASED: 6,
    Verdict.UNREGISTERED: 5,
    Verdict.FREE: 6,
    Verdict.PARTLY_REDIRECTED: 4,
}


@dataclass(frozen=True, slots=True)
class Report:
    """One verdict, as the journal entry, the stderr line and the exit code tell it."""

    verdict: Verdict
    unit: str | None
    summary: str  # what happened, one line, without the fix
    remedy: str | None = None
    address: str | None = None  # the bind that failed, e.g. "0.0.0.0" or "::"
    port: int | None = None
    proto: str | None = None
    state: str | None = None
    owner: Owner | None = None
    registered_unit: str | None = None
    team: str | None = None
    waited_ms: int | None = None
    gaps: tuple[str, ...] = ()
    taker: "Taker | None" = None  # a NAT rule that takes the port's traffic
    pool: tuple[str, int, int] | None = None  # an exhausted pool: it, its ports in use, min-free

    @property
    def exit_code(self) -> Exit:
        return EXIT[self.verdict]

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.verdict, 3)

    def line(self) -> str:
        """The stderr line `systemctl status` shows: what, then the clean fix, then the gaps."""
        parts = [self.summary]
        if self.remedy:
            parts.append(self.remedy)
        if self.gaps:
            parts.append("not found out: " + "; ".join(self.gaps))
        return "portguard: " + "; ".join(parts)

    def journal_fields(self) -> dict[str, str]:
        fields = {
            "MESSAGE": self.line().removeprefix("portguard: "),
            "PRIORITY": str(self.priority),
            "SYSLOG_IDENTIFIER": "portguard",
            "PORTGUARD_VERDICT": str(self.verdict),
        }
        if self.verdict in MESSAGE_ID:
            fields["MESSAGE_ID"] = MESSAGE_ID[self.verdict]
        owner, taker = self.owner, self.taker
        optional = {
            # `journalctl -u UNIT` (and `systemctl status`) also match entries a root process
            # sends about UNIT: the guard's verdict stays with its unit even when journald
            # reads the sender's cgroup too late, after a short-lived guard has exited.
            "OBJECT_SYSTEMD_UNIT": self.unit,
            "PORTGUARD_UNIT": self.unit,
            "PORTGUARD_PORT": self.port,
            "PORTGUARD_PROTO": self.proto,
            "PORTGUARD_ADDRESS": self.address,
            "PORTGUARD_STATE": self.state,
            "PORTGUARD_OWNER_KIND": owner.kind if owner else (taker.kind if taker else None),
            "PORTGUARD_OWNER_NAME": taker.name if taker else None,
            "PORTGUARD_REDIRECT_TO": taker.to if taker else None,
            "PORTGUARD_RULE_FAMILY": taker.family if taker else None,
            "PORTGUARD_RULE_TABLE": taker.table if taker else None,
            "PORTGUARD_RULE_CHAIN": taker.chain if taker else None,
            "PORTGUARD_RULE_HANDLE": taker.handle if taker else None,
            "PORTGUARD_OWNER_UNIT": owner.unit if owner else None,
            "PORTGUARD_OWNER_PID": owner.pid if owner else None,
            "PORTGUARD_OWNER_COMM": owner.comm if owner else None,
            "PORTGUARD_OWNER_USER": owner.user if owner else None,
            "PORTGUARD_OWNER_CONTAINER": container_label(owner) if owner else None,
            "PORTGUARD_REGISTERED_UNIT": self.registered_unit,
            "PORTGUARD_REGISTERED_OWNER": self.team,
            "PORTGUARD_WAITED_MS": self.waited_ms,
            "PORTGUARD_POOL": self.pool[0] if self.pool else None,
            "PORTGUARD_POOL_IN_USE": self.pool[1] if self.pool else None,
            "PORTGUARD_POOL_MIN_FREE": self.pool[2] if self.pool else None,
            "PORTGUARD_REMEDY": self.remedy,
            "PORTGUARD_UNKNOWN": "; ".join(self.gaps) if self.gaps else None,
        }
        fields.update({k: str(v) for k, v in optional.items() if v is not None and v != ""})
        return fields

    def as_data(self) -> dict[str, object]:
        """For --json: the journal's fields without the journal's own."""
        fields = self.journal_fields()
        data: dict[str, object] = {
            k.removeprefix("PORTGUARD_").lower(): v
            for k, v in fields.items()
            if k.startswith("PORTGUARD_")
        }
        data["message"] = fields["MESSAGE"]
        data["exit_code"] = int(self.exit_code)
        data["gaps"] = list(self.gaps)
        return data


def describe_owner(owner: Owner) -> str:
    """`nginx.service (pid 1312 nginx)`, `container web (3f2a…)`, `user alice's session`."""
    process = f"pid {owner.pid} {owner.comm}" if owner.pid and owner.comm else None
    process = process or (f"pid {owner.pid}" if owner.pid else None)
    return kind_of(owner).describe(owner, f" ({process})" if process else "")


def remedy_for(owner: Owner, *, unit: str, port: int, proto: str) -> str:
    """The clean fix through the owner's supervisor; never a signal, never shared plumbing
    (a container runtime, kube-proxy, the host's resolver) stopped or disabled."""
    kind = kind_of(owner)
    plumbing = runtimes.plumbing_remedy(owner.unit, owner.comm, port)
    if plumbing and kind.plumbing_first:
        return plumbing
    return kind.remedy(owner, Fix(unit, port, proto))


def took_from_ephemeral_range(occupant: Occupant, local_ports: LocalPorts | None) -> bool:
    """Whether OCCUPANT is an outgoing connection that the kernel gave this port from
    net.ipv4.ip_local_port_range (the field guides' ephemeral-port collision): a connection
    whose own port is in the range and not reserved, to a peer port outside it (a server's)."""
    if local_ports is None or occupant.peer is None or occupant.state in ("LISTEN", "UNCONN"):
        return False
    low, high = local_ports.ephemeral
    in_range = low <= occupant.port <= high
    reserved = not local_ports.reserved.missing(occupant.port, occupant.port).ranges
    return in_range and not reserved and not low <= occupant.peer[1] <= high


def bound_connection_remedy(owner: Owner, occupant: Occupant, unit: str) -> str:
    """The fix for a connection on a registered port that the kernel did not choose for it
    (outside net.ipv4.ip_local_port_range, or reserved): its program bound the port itself,
    or accepted it on a listener since closed, so reserving would not have kept it off."""
    assert occupant.peer is not None
    peer = f"{host_text(occupant.peer[0])}:{occupant.peer[1]}"
    plain = remedy_for(owner, unit=unit, port=occupant.port, proto=str(occupant.proto))
    return (
        f"a connection of {describe_owner(owner)} to {peer} holds {occupant.port}, bound to it "
        "on purpose (the kernel never picks a port outside net.ipv4.ip_local_port_range or a "
        f"reserved one, so 'portguard reserve' would not have kept it off); it frees when the "
        f"connection closes; {plain}"
    )


def client_remedy(owner: Owner, occupant: Occupant) -> str:
    """The fix for a registered port taken by an outgoing connection."""
    assert occupant.peer is not None
    whose = "" if owner.kind is OwnerKind.TIME_WAIT else f" of {describe_owner(owner)}"
    peer = f"{host_text(occupant.peer[0])}:{occupant.peer[1]}"
    return (
        f"a client connection{whose} to {peer} took {occupant.port} from "
        "net.ipv4.ip_local_port_range; the port frees when it closes. So that no connection "
        "takes a registered port again: 'portguard reserve --apply', and enable "
        "portguard-reserve.service to reserve them at every boot"
    )

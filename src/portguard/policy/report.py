"""A verdict as people and machines read it: the journal fields, the stderr line, the exit code."""

from dataclasses import dataclass
from enum import StrEnum

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.policy import runtimes
from portguard.policy.owners import Owner, OwnerKind
from portguard.registry.claims import host_text
from portguard.registry.localports import LocalPorts


class Verdict(StrEnum):
    FREE = "free"
    RELEASED = "released"
    UNREGISTERED = "unregistered"
    UNASSIGNABLE = "unassignable"
    HELD = "held"
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
}


@dataclass(frozen=True, slots=True)
class Report:
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
        owner = self.owner
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
            "PORTGUARD_OWNER_KIND": owner.kind if owner else None,
            "PORTGUARD_OWNER_UNIT": owner.unit if owner else None,
            "PORTGUARD_OWNER_PID": owner.pid if owner else None,
            "PORTGUARD_OWNER_COMM": owner.comm if owner else None,
            "PORTGUARD_OWNER_USER": owner.user if owner else None,
            "PORTGUARD_OWNER_CONTAINER": _container(owner) if owner else None,
            "PORTGUARD_REGISTERED_UNIT": self.registered_unit,
            "PORTGUARD_REGISTERED_OWNER": self.team,
            "PORTGUARD_WAITED_MS": self.waited_ms,
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


def _container(owner: Owner) -> str | None:
    if owner.container and owner.container_name:
        return f"{owner.container[:12]} ({owner.container_name})"
    return owner.container[:12] if owner.container else owner.container_name


def describe_owner(owner: Owner) -> str:
    """`nginx.service (pid 1312 nginx)`, `container web (3f2a…)`, `user alice's session`."""
    process = f"pid {owner.pid} {owner.comm}" if owner.pid and owner.comm else None
    process = process or (f"pid {owner.pid}" if owner.pid else None)
    suffix = f" ({process})" if process else ""
    match owner.kind:
        case OwnerKind.SOCKET:
            activates = f", which starts {', '.join(owner.activates)}" if owner.activates else ""
            return f"socket unit {owner.unit} (held by PID 1{activates})"
        case OwnerKind.CONTAINER:
            what = _container(owner)
            engine = f"{owner.runtime} " if owner.runtime not in (None, "docker") else ""
            subject = f"{engine}container {what}" if what else f"a {engine}container"
            if owner.forwards_to and not what:
                subject += f" at {owner.forwards_to}"
            rootless = owner.runtime == "podman" and owner.user not in (None, "root")
            whose = f" of {owner.user}" if rootless else ""
            via = owner.unit or "the container engine"
            return f"{subject}{whose} via {via}{suffix}"
        case OwnerKind.SESSION:
            return f"{owner.user or 'a user'}'s login session {owner.unit}{suffix}"
        case OwnerKind.USER_SERVICE:
            return f"{owner.user or 'a user'}'s user service {owner.unit}{suffix}"
        case OwnerKind.SELF:
            return f"a leftover process of {owner.unit} itself{suffix}"
        case OwnerKind.MACHINE:
            return f"machine {owner.container_name} ({owner.unit}, systemd-nspawn){suffix}"
        case OwnerKind.TIME_WAIT:
            return "connections in TIME-WAIT"
        case OwnerKind.UNKNOWN:
            where = f" in cgroup {owner.cgroup}" if owner.cgroup else ""
            return f"an unidentified process{where}{suffix}"
        case _:
            return f"{owner.unit}{suffix}"


def remedy_for(owner: Owner, *, unit: str, port: int, proto: str) -> str:
    """The clean fix through the owner's supervisor; never a signal, never shared plumbing
    (a container runtime, kube-proxy, the host's resolver) stopped or disabled."""
    plumbing = runtimes.plumbing_remedy(owner.unit, owner.comm, port)
    if plumbing and owner.kind in (OwnerKind.SERVICE, OwnerKind.SCOPE, OwnerKind.SOCKET):
        return plumbing
    match owner.kind:
        case OwnerKind.SERVICE if owner.transient:
            return (
                f"stop it with 'systemctl stop {owner.unit}' (a transient unit: 'systemctl "
                f"status {owner.unit}' shows what started it, and there is nothing to "
                "disable), or move one of the two to another port"
            )
        case OwnerKind.SERVICE:
            return (
                f"stop it with 'systemctl stop {owner.unit}' (and 'systemctl disable "
                f"{owner.unit}' if it should not run), or move one of the two to another port"
            )
        case OwnerKind.SCOPE:
            # A scope is transient: there is nothing to disable; who made it can stop it.
            return (
                f"'systemctl status {owner.unit}' shows what started it; stop it there, or "
                f"'systemctl stop {owner.unit}', or move one of the two to another port"
            )
        case OwnerKind.SOCKET:
            disable = "" if owner.transient else f" and 'systemctl disable {owner.unit}'"
            return (
                f"'systemctl stop {owner.unit}'{disable} if "
                f"{unit} should own {port}/{proto}, or list {owner.unit} in {unit}'s 'via' "
                "if it is meant to pass the port on"
            )
        case OwnerKind.CONTAINER:
            runtime = runtimes.Runtime(owner.runtime) if owner.runtime else None
            name = owner.container_name or owner.container
            service = owner.unit if (owner.unit or "").endswith(".service") else None
            return runtimes.container_remedy(
                runtime, name, published=not owner.host_network, port=port, user=owner.user,
                service=service,
            )  # fmt: skip
        case OwnerKind.MACHINE:
            return runtimes.machine_remedy(owner.container_name or "NAME")
        case OwnerKind.SESSION:
            session = (owner.unit or "").removeprefix("session-").removesuffix(".scope")
            return (
                f"ask {owner.user or 'the user'} to stop the program "
                f"(see 'loginctl session-status {session}')"
            )
        case OwnerKind.USER_SERVICE:
            return f"'systemctl --user -M {owner.user}@ stop {owner.unit}'"
        case OwnerKind.SELF:
            return (
                f"the previous instance of {unit} did not exit in time: look at its shutdown "
                "(KillMode=, TimeoutStopSec=) or raise the registry's 'wait'"
            )
        case OwnerKind.TIME_WAIT:
            return (
                "let the service set SO_REUSEADDR ('reuseaddr: true'), or raise 'wait' above "
                "the TIME-WAIT left"
            )
        case _:
            return find_holder(port, proto)


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


def find_holder(port: int, proto: str) -> str:
    """How an operator sees a holder portguard could not name (ss shows every process as root)."""
    flag = "t" if proto == "tcp" else "u"
    return f"run 'ss -{flag}anp sport = :{port}' as root to see the holder"

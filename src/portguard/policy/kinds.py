"""Every kind of owner portguard names, one row each: how it is described, the clean fix
through its own supervisor, what `why` shows of it, and whether `init` registers it.

`check`'s journal entry and stderr line, `why`, `audit`, `init` and `wait` read their words
from here (report.describe_owner and report.remedy_for are the doors), so a new kind of owner
is one row in KINDS plus its detector in attribute.py. Containers have a row per runtime:
each runtime has its own supervisor, and so its own fix. Pure: words from the facts found.
"""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from portguard.policy import runtimes
from portguard.policy.owners import Fix, Owner, OwnerKind, Rows
from portguard.policy.runtimes import Runtime

if TYPE_CHECKING:
    from portguard.policy.owners import Occupying


class Kind:
    """How portguard speaks of one kind of owner. (A plain class: a dataclass's or a
    NamedTuple's making would cost a held check a third of a millisecond at every start.)"""

    __slots__ = ("describe", "left_out", "plumbing_first", "remedy", "unclaimed", "why")

    def __init__(
        self,
        describe: Callable[[Owner, str], str],
        remedy: Callable[[Owner, Fix], str],
        unclaimed: Callable[[Owner, Fix], str] | None,
        why: "Callable[[Occupying], Rows]",
        left_out: Callable[[Owner], str | None],
        *,
        plumbing_first: bool = False,
    ) -> None:
        self.describe = describe  # the owner, and " (pid N comm)" when known
        self.remedy = remedy  # check's fix (why's too, for a registered port)
        # why's fix when no claim covers the port; None: remedy's, for "the registered unit"
        self.unclaimed = unclaimed
        self.why = why  # why's rows about the owner
        # init's reason to leave a listener of this owner out of the registry; None: register
        self.left_out = left_out
        self.plumbing_first = plumbing_first  # shared plumbing's own fix comes first


def find_holder(port: int, proto: str) -> str:
    """How an operator sees a holder portguard could not name (ss shows every process as root)."""
    flag = "t" if proto == "tcp" else "u"
    return f"run 'ss -{flag}anp sport = :{port}' as root to see the holder"


def when(epoch: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    return f"{stamp} ({_age(time.time() - epoch)} ago)"


def _age(seconds: float) -> str:
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{max(0, int(seconds // size))} {unit}"
    return f"{int(seconds // 86400)} days"


def _left(reason: str) -> Callable[[Owner], str | None]:
    return lambda owner: reason


def _registered(owner: Owner) -> str | None:
    return None


# --- units: service, socket, scope --------------------------------------------------------------


def _unit_rows(occupying: "Occupying") -> Rows:
    facts = occupying.unit
    via = facts.triggered_by if facts else ()
    rows = [("unit", _unit_text(occupying))]
    return rows + ([("", f"activated by {', '.join(via)}")] if via else [])


def _unit_text(occupying: "Occupying") -> str:
    owner, facts = occupying.owner, occupying.unit
    state = f", {facts.active_state} ({facts.sub_state})" if facts else ""
    described = f' "{facts.description}"' if facts and facts.description else ""
    return f"{owner.unit}{described}{state}"


def _service_remedy(owner: Owner, fix: Fix) -> str:
    if owner.transient:
        return (
            f"stop it with 'systemctl stop {owner.unit}' (a transient unit: 'systemctl "
            f"status {owner.unit}' shows what started it, and there is nothing to "
            "disable), or move one of the two to another port"
        )
    return (
        f"stop it with 'systemctl stop {owner.unit}' (and 'systemctl disable "
        f"{owner.unit}' if it should not run), or move one of the two to another port"
    )


def _service_unclaimed(owner: Owner, fix: Fix) -> str:
    unit = owner.unit or "?"
    if owner.transient:
        return (
            f"'systemctl stop {unit}' (a transient unit: 'systemctl status {unit}' shows "
            "what started it, and there is nothing to disable)"
        )
    return (
        f"'systemctl stop {unit}' (and 'systemctl disable {unit}' if it should not "
        f"run); if it belongs there, register it: {unit} with {fix.port}/{fix.proto}"
    )


def _socket_describe(owner: Owner, process: str) -> str:
    activates = f", which starts {', '.join(owner.activates)}" if owner.activates else ""
    return f"socket unit {owner.unit} (held by PID 1{activates})"


def _socket_remedy(owner: Owner, fix: Fix) -> str:
    disable = "" if owner.transient else f" and 'systemctl disable {owner.unit}'"
    return (
        f"'systemctl stop {owner.unit}'{disable} if "
        f"{fix.unit} should own {fix.port}/{fix.proto}, or list {owner.unit} in {fix.unit}'s "
        "'via' if it is meant to pass the port on"
    )


def _socket_unclaimed(owner: Owner, fix: Fix) -> str:
    unit = owner.unit or "?"
    units = " ".join((unit, *owner.activates))
    disable = "" if owner.transient else f" and 'systemctl disable {unit}'"
    return (
        f"'systemctl stop {units}'{disable} if nothing should "
        f"listen on {fix.port}/{fix.proto}; if it belongs there, register it"
    )


def _socket_rows(occupying: "Occupying") -> Rows:
    owner = occupying.owner
    starts = f" and starts {', '.join(owner.activates)}" if owner.activates else ""
    return [("unit", _unit_text(occupying)), ("", f"a socket unit: PID 1 holds the port{starts}")]


def _scope_remedy(owner: Owner, fix: Fix) -> str:
    # A scope is transient: there is nothing to disable; who made it can stop it.
    return (
        f"'systemctl status {owner.unit}' shows what started it; stop it there, or "
        f"'systemctl stop {owner.unit}', or move one of the two to another port"
    )


def _scope_unclaimed(owner: Owner, fix: Fix) -> str:
    unit = owner.unit or "?"
    return f"'systemctl status {unit}' shows who started it; 'systemctl stop {unit}' ends it"


# --- people: a login session, a user's own service ----------------------------------------------


def _session_describe(owner: Owner, process: str) -> str:
    return f"{owner.user or 'a user'}'s login session {owner.unit}{process}"


def _session_remedy(owner: Owner, fix: Fix) -> str:
    session = (owner.unit or "").removeprefix("session-").removesuffix(".scope")
    return (
        f"ask {owner.user or 'the user'} to stop the program "
        f"(see 'loginctl session-status {session}')"
    )


def _session_rows(occupying: "Occupying") -> Rows:
    owner, session = occupying.owner, occupying.session
    if session is None:
        return [("session", f"{owner.unit} of {owner.user}")]
    parts = [f"{session.id} of {session.user or owner.user}"]
    if session.tty:
        parts.append(f"on {session.tty}")
    if session.since:
        parts.append(f"since {when(session.since)}")
    opened = session.service or ""
    if session.remote_host:
        opened += f" from {session.remote_host}"
    return [("session", " ".join(parts) + (f" ({opened.strip()})" if opened else ""))]


def _user_service_describe(owner: Owner, process: str) -> str:
    return f"{owner.user or 'a user'}'s user service {owner.unit}{process}"


def _user_service_remedy(owner: Owner, fix: Fix) -> str:
    return f"'systemctl --user -M {owner.user}@ stop {owner.unit}'"


def _user_service_rows(occupying: "Occupying") -> Rows:
    owner = occupying.owner
    return [("unit", f"{owner.unit}, {owner.user}'s user service ({owner.cgroup})")]


# --- the unit itself, the kernel, and no one known ----------------------------------------------


def _self_describe(owner: Owner, process: str) -> str:
    return f"a leftover process of {owner.unit} itself{process}"


def _self_remedy(owner: Owner, fix: Fix) -> str:
    return (
        f"the previous instance of {fix.unit} did not exit in time: look at its shutdown "
        "(KillMode=, TimeoutStopSec=) or raise the registry's 'wait'"
    )


def _time_wait_remedy(owner: Owner, fix: Fix) -> str:
    return (
        "let the service set SO_REUSEADDR ('reuseaddr: true'), or raise 'wait' above "
        "the TIME-WAIT left"
    )


def _unknown_describe(owner: Owner, process: str) -> str:
    where = f" in cgroup {owner.cgroup}" if owner.cgroup else ""
    return f"an unidentified process{where}{process}"


def _unknown_rows(occupying: "Occupying") -> Rows:
    owner = occupying.owner
    where = f"cgroup {owner.cgroup}" if owner.cgroup else "its cgroup is not visible"
    return [("owner", f"not a unit: {where}, uid of {owner.user}")]


def _unknown_remedy(owner: Owner, fix: Fix) -> str:
    """A process outside any unit: named when its PID is known (the guard runs as root and
    reads it), with the command that shows who started it; never a signal."""
    if owner.pid is None:
        return find_holder(fix.port, fix.proto)
    who = f"pid {owner.pid}" + (f" ({owner.comm})" if owner.comm else "")
    user = f", user {owner.user}" if owner.user else ""
    where = f"cgroup {owner.cgroup}" if owner.cgroup else "a cgroup of no unit"
    return (
        f"{who}{user} runs outside any unit ({where}): end it through whoever started it "
        f"('ps -o pid,ppid,user,lstart,args -p {owner.pid}' shows its parent and command), "
        f"or give {fix.unit or 'the registered unit'} another port"
    )


def _unit_describe(owner: Owner, process: str) -> str:
    return f"{owner.unit}{process}"


UNKNOWN_LEFT_OUT = "its unit could not be found out, left out"


def _container(
    remedy: Callable[[Owner, Fix], str], left_out: Callable[[Owner], str | None]
) -> Kind:
    return Kind(runtimes.container_describe, remedy, None, runtimes.container_rows, left_out)


# The table. Keys: the owner kind, and for a container its runtime (its supervisor).
KINDS: dict[tuple[OwnerKind, str | None], Kind] = {
    (OwnerKind.SERVICE, None): Kind(
        _unit_describe, _service_remedy, _service_unclaimed, _unit_rows, _registered,
        plumbing_first=True,
    ),
    (OwnerKind.SOCKET, None): Kind(
        _socket_describe, _socket_remedy, _socket_unclaimed, _socket_rows, _registered,
        plumbing_first=True,
    ),
    (OwnerKind.SCOPE, None): Kind(
        _unit_describe, _scope_remedy, _scope_unclaimed,
        lambda o: [("unit", f"{_unit_text(o)}, a transient scope")],
        _left("a scope cannot be guarded (it has no ExecStartPre=), left out"),
        plumbing_first=True,
    ),
    (OwnerKind.SESSION, None): Kind(
        _session_describe, _session_remedy, None, _session_rows, _left("not a unit, left out")
    ),
    (OwnerKind.USER_SERVICE, None): Kind(
        _user_service_describe, _user_service_remedy, None, _user_service_rows,
        _left("a user's own unit, not the system's, left out"),
    ),
    (OwnerKind.CONTAINER, Runtime.DOCKER): _container(
        runtimes.docker_remedy, runtimes.docker_left_out
    ),
    (OwnerKind.CONTAINER, Runtime.PODMAN): _container(
        runtimes.podman_remedy, runtimes.podman_left_out
    ),
    (OwnerKind.CONTAINER, Runtime.KUBERNETES): _container(
        runtimes.kubernetes_remedy, _left("a Kubernetes pod's, managed by the kubelet, left out")
    ),
    (OwnerKind.CONTAINER, Runtime.CONTAINERD): _container(
        runtimes.containerd_remedy,
        lambda o: runtimes.on_host_network(o)
        or "a containerd container, not a unit of its own, left out",
    ),
    (OwnerKind.CONTAINER, Runtime.LXC): _container(
        runtimes.lxc_remedy,
        lambda o: runtimes.on_host_network(o)
        or "an LXC container, not a unit of its own, left out",
    ),
    (OwnerKind.MACHINE, None): Kind(
        runtimes.machine_describe, runtimes.machine_remedy, None, runtimes.machine_rows,
        _left("a systemd-nspawn machine's payload, not a unit of its own, left out"),
    ),
    (OwnerKind.SELF, None): Kind(
        _self_describe, _self_remedy, None, _unit_rows, _left(UNKNOWN_LEFT_OUT)
    ),
    (OwnerKind.TIME_WAIT, None): Kind(
        lambda owner, process: "connections in TIME-WAIT", _time_wait_remedy, None, _unit_rows,
        _left(UNKNOWN_LEFT_OUT),
    ),
    (OwnerKind.UNKNOWN, None): Kind(
        _unknown_describe, _unknown_remedy, _unknown_remedy, _unknown_rows,
        _left(UNKNOWN_LEFT_OUT),
    ),
}  # fmt: skip


def kind_of(owner: Owner) -> Kind:
    """OWNER's row: a container's by its runtime (docker's when the engine is not known)."""
    if owner.kind is OwnerKind.CONTAINER:
        return KINDS.get((owner.kind, owner.runtime), KINDS[(owner.kind, Runtime.DOCKER)])
    return KINDS[(owner.kind, None)]

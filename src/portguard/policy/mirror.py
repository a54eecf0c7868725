"""How the guard takes on the bind a unit will make, decided from the unit's configuration.

The guard runs as `ExecStartPre=+` (full privileges, outside the exec sandbox, so a unit's
NoExecPaths= or a missing capability never stops it from running) but inside the unit's
cgroup and network namespace, which `+` does not lift. What `+` does lift, it puts back for
the probe alone: the identity the service binds with. Only two parts of that identity
change what bind() answers: whether the process may bind a port below
net.ipv4.ip_unprivileged_port_start (CAP_NET_BIND_SERVICE in the network namespace's owning
user namespace), and its uid (a SO_REUSEPORT group only takes sockets of the same uid).

- a `.socket` unit: PID 1 binds, as root with every capability, with SO_REUSEADDR and the
  unit's own ReusePort=, FreeBind=, Transparent= and BindIPv6Only=;
- `ExecStart=+…`: root, every capability; `ExecStart=!…`: root within the unit's
  CapabilityBoundingSet= (User= is not applied, the daemon drops privileges itself);
- otherwise the unit's User= (root when unset), with CAP_NET_BIND_SERVICE when root keeps
  it in its bounding set, or a user has it in AmbientCapabilities= as well; never under
  PrivateUsers=, whose capabilities do not reach the host's network namespace.

A DynamicUser= unit binds as `--user dynamic`: an unprivileged uid, as systemd will pick
one; only its claims that set reuseport are left unjudged, since SO_REUSEPORT shares a port
between sockets of one uid alone.

Anything it cannot read with certainty -- ExecStart= lines with different identities, a
User= with a specifier, a private user namespace with its own network namespace, a value it
does not know -- declines with the reason, and the unit is left unguarded rather than
guarded wrongly. Pure and stdlib only: the generator imports it.
"""

from portguard.errors import Refused
from portguard.host.unitfiles import Settings

CAP = "CAP_NET_BIND_SERVICE"
# `check --user dynamic` (freepath.binds.DYNAMIC; a test holds the two equal): spelled here
# too, so that the generator, which imports this, loads no more of the free path than it did.
DYNAMIC = "dynamic"
_TRUE = ("1", "yes", "y", "true", "t", "on")
_FALSE = ("0", "no", "n", "false", "f", "off")
_PREFIXES = "-@:+!|"
# A dual-stack [::] is what a claim without v6only already probes; ipv6-only narrows it.
_BIND_IPV6_ONLY = ("default", "both", "ipv6-only")


class Decline(Refused):
    """The guard cannot mirror this unit's bind; the message says why."""


def guard_args(unit: str, settings: Settings) -> tuple[str, ...]:
    """The arguments after `portguard check` that make its probe bind as UNIT will."""
    if unit.endswith(".socket"):
        return _socket_args(settings)
    return _service_args(settings)


def _last(settings: Settings, section: str, key: str) -> str:
    """A last-wins setting's value ('' when unset or reset)."""
    values = settings.get((section, key), [])
    return values[-1] if values else ""


def _boolean(settings: Settings, section: str, key: str) -> bool:
    value = _last(settings, section, key).lower()
    if value in _TRUE:
        return True
    if value in _FALSE or value == "":
        return False
    raise Decline(f"{key}={value} is not a value the guard knows how to mirror")


def _socket_args(settings: Settings) -> tuple[str, ...]:
    options = [name.lower() for name in ("ReusePort", "FreeBind", "Transparent")
               if _boolean(settings, "Socket", name)]  # fmt: skip
    only = _last(settings, "Socket", "BindIPv6Only") or "default"
    if only not in _BIND_IPV6_ONLY:
        raise Decline(f"BindIPv6Only={only} is not a value the guard knows how to mirror")
    if only == "ipv6-only":
        options.append("v6only")
    return ("--socket-options", ",".join(["reuseaddr", *options]))


def _service_args(settings: Settings) -> tuple[str, ...]:
    prefixes = _exec_start_prefixes(settings)
    if len(prefixes) > 1:
        raise Decline("its ExecStart= lines run with different identities")
    prefix = prefixes.pop()
    if "+" in prefix:
        return ()
    bounding = _capability(settings, "CapabilityBoundingSet", initial=True)
    if "!" in prefix:
        return () if bounding else ("--caps", "none")
    user = _last(settings, "Service", "User")
    if "%" in user:
        raise Decline(f"User={user} uses a specifier")
    if _boolean(settings, "Service", "DynamicUser") and user not in ("root", "0"):
        # A uid systemd picks at start: unprivileged, which is all a bind looks at except
        # SO_REUSEPORT (check leaves such claims unjudged, and says so).
        user = DYNAMIC
    private_users = _private_users(settings)
    if private_users and (
        _boolean(settings, "Service", "PrivateNetwork")
        or _last(settings, "Service", "NetworkNamespacePath")
    ):
        raise Decline("PrivateUsers= with a network namespace of its own")
    root = user in ("", "root", "0")
    ambient = _capability(settings, "AmbientCapabilities", initial=False)
    may_bind = bounding and (root or ambient) and not private_users
    args: list[str] = [] if root else ["--user", user]
    if may_bind != root:  # the default: root may, any other user may not
        args += ["--caps", "net_bind_service" if may_bind else "none"]
    return tuple(args)


def _exec_start_prefixes(settings: Settings) -> set[str]:
    """The identity each ExecStart= line runs with, by its prefix: `+`, `!` (and `!!`) or ''
    (`-`, `@`, `:` and `|` change the command's handling, not who runs it)."""
    lines: list[str] = []
    for value in settings.get(("Service", "ExecStart"), []):
        lines = [] if value == "" else [*lines, value]  # an empty assignment resets the list
    if not lines:
        raise Decline("it has no ExecStart=")
    prefixes = {line[: len(line) - len(line.lstrip(_PREFIXES))] for line in lines}
    return {"+" if "+" in p else "!" if "!" in p else "" for p in prefixes}


def _private_users(settings: Settings) -> bool:
    value = _last(settings, "Service", "PrivateUsers").lower()
    if value in ("", *_FALSE):
        return False
    if value in (*_TRUE, "self", "identity"):
        return True
    raise Decline(f"PrivateUsers={value} is not a value the guard knows how to mirror")


def _capability(settings: Settings, key: str, *, initial: bool) -> bool:
    """Whether CAP_NET_BIND_SERVICE ends up in the set KEY builds (systemd.exec(5)): the first
    assignment replaces the default, later ones are ORed in, or ANDed when they start with ~;
    an empty one resets the set to nothing."""
    has, untouched = initial, True
    for value in settings.get(("Service", key), []):
        words = value.split()
        if not words:
            has, untouched = False, False
            continue
        inverted = words[0].startswith("~")
        named = CAP in {w.lstrip("~").upper() for w in words}
        if inverted:
            has = (not named) if untouched else (has and not named)
        else:
            has = named if untouched else (has or named)
        untouched = False
    return has

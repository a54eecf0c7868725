"""Who owns a socket: occupant -> cgroup -> unit -> service, socket unit, session, container,
machine, or the checked unit itself.

Pure: all it reads of the host comes in through `Context` (commands/attribution.py builds the
real one; tests build their own), as the guard's effects do. The owner is found by DETECTORS,
most specific first, each naming it or passing; a new kind of owner is one detector here and
one row in kinds.py. What cannot be found out (no cgroup, a silent bus, no Docker API) is
recorded as a gap for the report; attribution never fails the verdict the probe already gave.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from portguard.host import docker, podman
from portguard.host.cgroups import is_within, unit_of
from portguard.host.occupants import Occupant
from portguard.host.processes import SocketOptions
from portguard.host.units import FactsUnavailable, UnitFacts
from portguard.policy import runtimes
from portguard.policy.owners import Attribution, Holding, Owner, OwnerKind
from portguard.registry.localports import LocalPorts

_SESSION_SCOPE = re.compile(r"^session-[^/]+\.scope$")
_DOCKER_HOLDERS = ("docker-proxy", "dockerd")
_DOCKER_UNIT = "docker.service"
_OPTIONS_READ_LIMIT = 64  # sockets whose options are read from their holder, per attribution

# `units.unit_facts`'s signature: names, then keyword timeout and patterns.
FactsQuery = Callable[..., dict[str, UnitFacts]]


def _nothing(*args: object, **kwargs: object) -> Any:
    return None


@dataclass(frozen=True)
class Context:
    """Where attribution looks, and every way it reads the host (the defaults read nothing:
    commands/attribution.here() gives the real ones)."""

    # cgroup ids -> their paths; None: no cgroup2 mount, so sockets cannot be mapped to units
    cgroup_paths: Callable[[set[int]], dict[int, str]] | None = None
    cgroup_pids: Callable[[str], list[int]] = lambda path: []
    cgroup_of: Callable[[int], str | None] = _nothing  # a process's cgroup
    # the processes among PIDS holding the socket inodes wanted (all when None), with the fd
    socket_holders: Callable[[list[int], set[int] | None], dict[int, list[tuple[int, int]]]] = (
        lambda pids, inodes: {}
    )
    # every process searched for a socket inode, skipping some, within a time: its holder
    holder_by_inode: Callable[[int, frozenset[int], float], int | None] = _nothing
    comm: Callable[[int], str | None] = _nothing
    cmdline: Callable[[int], tuple[str, ...]] = lambda pid: ()
    options_of: Callable[[int, int, int | None], SocketOptions | None] = _nothing
    user_name: Callable[[int | None], str | None] = _nothing
    is_transient: Callable[[str], bool] = lambda unit: False  # made at run time: no disable
    facts: FactsQuery = lambda names, **kwargs: {}
    docker_listing: Callable[..., list[dict[str, Any]]] = lambda **kwargs: []
    # (id, name) of the rootless container a forwarder's podman scope serves
    rootless_container: Callable[[str], tuple[str, str | None] | None] = _nothing
    local_ports: Callable[[], LocalPorts | None] = _nothing
    clock: Callable[[], float] = lambda: 0.0
    # This attribution.
    self_cgroup: str | None = None  # the checked unit's cgroup: its sockets are "self"
    facts_timeout: float = 1.0
    own_pids: frozenset[int] = field(default_factory=frozenset)
    # Search every process for a socket its own cgroup does not hold (root only: others' fds
    # are not ours to read); 0: never.
    inode_search_seconds: float = 0.0


def attribute(
    occupants: Iterable[Occupant], context: Context, also: Sequence[str] = ()
) -> Attribution:
    """Owners of OCCUPANTS; ALSO names units whose facts the caller wants from the same query."""
    occupants = list(occupants)
    gaps: list[str] = []
    ids = {o.cgroup_id for o in occupants if o.cgroup_id}
    paths = context.cgroup_paths(ids) if context.cgroup_paths else {}
    if ids and context.cgroup_paths is None:
        gaps.append("no cgroup2 mount: socket owners cannot be mapped to units")
    names = sorted({u for p in paths.values() if (u := unit_of(p))} | set(also))
    try:
        facts = context.facts(names, timeout=context.facts_timeout)
    except FactsUnavailable as exc:
        facts = {}
        gaps.append(f"{exc}; unit details (MainPID, socket activation) are missing")
    wanted: dict[str, set[int]] = {}
    for occupant in occupants:
        path = paths.get(occupant.cgroup_id) if occupant.cgroup_id else None
        if path is not None and occupant.inode:
            wanted.setdefault(path, set()).add(occupant.inode)
    finder = _Finder(context, facts, gaps, wanted)
    holdings = tuple(finder.holding(o, paths.get(o.cgroup_id) if o.cgroup_id else None)
                     for o in occupants)  # fmt: skip
    local_ports = context.local_ports() if any(o.peer for o in occupants) else None
    return Attribution(holdings, tuple(dict.fromkeys(gaps)), facts, local_ports=local_ports)


class _Finder:
    def __init__(
        self,
        context: Context,
        facts: dict[str, UnitFacts],
        gaps: list[str],
        wanted: dict[str, set[int]] | None = None,
    ) -> None:
        self.context = context
        self.wanted = wanted or {}  # each cgroup's socket inodes the census found
        self.facts = facts
        self.gaps = gaps
        self._listing: list[dict[str, Any]] | None = None
        self._options_left = _OPTIONS_READ_LIMIT
        self._search_spent = 0.0  # seconds of inode search, bounded per attribution
        self._held: dict[str, dict[int, list[tuple[int, int]]]] = {}  # cgroup -> inode -> fds
        self._fds: dict[tuple[int, int], int] = {}  # (inode, pid) -> the holder's fd
        self._comms: dict[int, str | None] = {}

    def holding(self, occupant: Occupant, path: str | None) -> Holding:
        owner = self.owner(occupant, path)
        options = None
        if not occupant.is_time_wait and owner.pids and self._options_left > 0:
            # Whether it blocks a bind depends on these (guard._blockers). Bounded: a busy
            # server's thousands of connections on its port are not each looked into; the
            # ones left unread are judged as "may block".
            self._options_left -= 1
            pid = owner.pids[0]
            options = self.context.options_of(
                occupant.inode, pid, self._fds.get((occupant.inode, pid))
            )
        return Holding(occupant, owner, options)

    def owner(self, occupant: Occupant, path: str | None) -> Owner:
        if occupant.is_time_wait:
            return Owner(OwnerKind.TIME_WAIT)
        user = self.context.user_name(occupant.uid)
        holders = self._holders(occupant, path) if path else []
        if not holders and not (path and (unit_of(path) or "").endswith(".socket")):
            # The cgroup's evidence failed (gone, or none of its processes holds the socket:
            # one process made it, another holds it, as Podman's conmon does); a socket unit's
            # listener is PID 1's by design.
            found = self._holder_anywhere(occupant)
            if found is not None:
                path, holders = found
        if path is None:
            self.gaps.append(f"the cgroup of the socket on {occupant} is not visible from here")
            return Owner(OwnerKind.UNKNOWN, user=user)
        pid = holders[0] if holders else None
        base = Owner(OwnerKind.UNKNOWN, unit_of(path), pid, self.comm(pid), user, cgroup=path,
                     pids=tuple(holders))  # fmt: skip
        self_cgroup = self.context.self_cgroup
        if self_cgroup and self_cgroup != "/" and is_within(path, self_cgroup):
            return replace(base, kind=OwnerKind.SELF, unit=unit_of(self_cgroup) or base.unit)
        for detect in DETECTORS:
            found_owner = detect(self, occupant, base, path)
            if found_owner is not None:
                return found_owner
        return base

    def comm(self, pid: int | None) -> str | None:
        # Once per process: a busy service's thousands of connections name the same few.
        if not pid:
            return None
        if pid not in self._comms:
            self._comms[pid] = self.context.comm(pid)
        return self._comms[pid]

    def rootless(self, base: Owner, path: str) -> Owner:
        found = self.context.rootless_container(path)
        if found is None:
            self.gaps.append(
                "the rootless container's namespace could not be read (as root it can)"
            )
        return replace(base, kind=OwnerKind.CONTAINER, runtime=str(runtimes.Runtime.PODMAN),
                       container=found[0] if found else None,
                       container_name=found[1] if found else None)  # fmt: skip

    def _holder_anywhere(self, occupant: Occupant) -> tuple[str, list[int]] | None:
        """The process holding the socket, found by its inode, and that process's cgroup."""
        seconds = self.context.inode_search_seconds
        if not seconds or not occupant.inode or self._search_spent >= seconds:
            return None
        started = self.context.clock()
        pid = self.context.holder_by_inode(occupant.inode, self.context.own_pids,
                                           seconds - self._search_spent)  # fmt: skip
        self._search_spent += self.context.clock() - started
        path = self.context.cgroup_of(pid) if pid else None
        return (path, [pid]) if pid and path else None

    def _holders(self, occupant: Occupant, path: str) -> list[int]:
        if self.context.cgroup_paths is None or not occupant.inode:
            return []
        held = self._held.get(path)
        if held is None:
            # Once per cgroup: every socket its processes hold. Only fds we may read are
            # looked at: as an unprivileged User= the unit is still named, and the PID comes
            # from systemd's MainPID when the bus answers.
            own = self.context.own_pids
            candidates = [p for p in self.context.cgroup_pids(path) if p not in own]
            held = self.context.socket_holders(candidates, self.wanted.get(path))
            self._held[path] = held
            for inode, holders in held.items():
                for pid, fd in holders:
                    self._fds.setdefault((inode, pid), fd)
        return list(dict.fromkeys(pid for pid, _ in held.get(occupant.inode, ())))

    def docker_listing(self) -> list[dict[str, Any]]:
        if self._listing is None:
            try:
                self._listing = self.context.docker_listing(timeout=1.0)
            except OSError as exc:
                self.gaps.append(f"the Docker API did not answer ({exc})")
                self._listing = []
        return self._listing


# --- the detectors, most specific first ---------------------------------------------------------

# A detector gets the finder, the socket, the owner as far as the cgroup tells (its unit,
# holder, user) and the cgroup path; it names the owner, or passes with None.
Detector = Callable[[_Finder, Occupant, Owner, str], Owner | None]


def _lxc(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    # Before the units: a system container's own systemd has units of its own below it.
    name = runtimes.lxc_name(path)
    if name is None:
        return None
    return replace(base, kind=OwnerKind.CONTAINER, unit=None, container_name=name,
                   runtime=str(runtimes.Runtime.LXC), host_network=True)  # fmt: skip


def _socket_unit(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    if not (base.unit or "").endswith(".socket"):
        return None
    facts = finder.facts.get(base.unit or "")
    # The socket unit's listener is held by PID 1 on the unit's behalf.
    return replace(base, kind=OwnerKind.SOCKET, pid=1, comm=finder.comm(1),
                   activates=facts.triggers if facts else (),
                   transient=finder.context.is_transient(base.unit or ""))  # fmt: skip


def _container_scope(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    scope = runtimes.container_scope(base.unit, path) if base.unit else None
    if scope is None:
        return None
    # The container's own process holds the port: it is on the host's network (a published
    # port is held by the engine's proxy, in the engine's cgroup).
    is_docker = scope.runtime == runtimes.Runtime.DOCKER
    found = docker.by_id(scope.id, finder.docker_listing()) if is_docker else None
    return replace(base, kind=OwnerKind.CONTAINER, container=scope.id,
                   container_name=found.name if found else None,
                   runtime=str(scope.runtime), host_network=True)  # fmt: skip


def _machine(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    machine = runtimes.machine_name(base.unit, path) if base.unit else None
    return replace(base, kind=OwnerKind.MACHINE, container_name=machine) if machine else None


def _session(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    matched = base.unit is not None and _SESSION_SCOPE.match(base.unit)
    return replace(base, kind=OwnerKind.SESSION) if matched else None


def _user_unit(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    if base.unit is None or not re.search(r"/user@\d+\.service/", path):
        return None
    if base.comm in runtimes.ROOTLESS_FORWARDERS:
        # Rootless Podman's port forwarder: the container is the owner, not its scope.
        return finder.rootless(base, path)
    return replace(base, kind=OwnerKind.USER_SERVICE)


def _docker_engine(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    if base.unit is None or not (base.comm in _DOCKER_HOLDERS or base.unit == _DOCKER_UNIT):
        return None
    # docker.service holds only what its containers publish, whichever of its processes it is
    # (an unprivileged reader sees none of them).
    found = docker.publishing(
        occupant.port, str(occupant.proto), finder.docker_listing(), str(occupant.address)
    )
    docker_runtime = str(runtimes.Runtime.DOCKER)
    if found is not None:
        return replace(base, kind=OwnerKind.CONTAINER, container=found.id,
                       container_name=found.name, runtime=docker_runtime)  # fmt: skip
    # No API to ask (an unprivileged guard cannot read docker.sock): docker-proxy's own
    # arguments still say where the port goes, and which process it is.
    pids = finder.context.cgroup_pids(base.cgroup) if base.cgroup else []
    argvs = [(pid, finder.context.cmdline(pid)) for pid in pids]
    proxy = docker.proxy_for(occupant.port, str(occupant.proto), argvs)
    if proxy is None:
        return replace(base, kind=OwnerKind.CONTAINER, runtime=docker_runtime)
    return replace(base, kind=OwnerKind.CONTAINER, runtime=docker_runtime, pid=proxy[0],
                   comm=finder.comm(proxy[0]), forwards_to=proxy[1])  # fmt: skip


def _conmon(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    conmon = podman.conmon_container(finder.context.cmdline(base.pid)) if base.pid else None
    if base.unit is None or conmon is None:
        return None
    # Podman's conmon holds a rootful container's port, in the cgroup of whatever ran podman:
    # a session, its own libpod-conmon scope, or a Quadlet unit (then the fix is that unit's).
    return replace(base, kind=OwnerKind.CONTAINER, container=conmon[0],
                   container_name=conmon[1], runtime=str(runtimes.Runtime.PODMAN))  # fmt: skip


def _service(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    if not (base.unit or "").endswith(".service"):
        return None
    # The process holding the socket, when its fds could be read (a service's listener may be
    # a child of its MainPID); otherwise systemd's MainPID.
    facts = finder.facts.get(base.unit or "")
    pid = base.pid or (facts.main_pid if facts and facts.main_pid else None)
    return replace(base, kind=OwnerKind.SERVICE, pid=pid, comm=finder.comm(pid),
                   transient=finder.context.is_transient(base.unit or ""))  # fmt: skip


def _scope(finder: _Finder, occupant: Occupant, base: Owner, path: str) -> Owner | None:
    return replace(base, kind=OwnerKind.SCOPE) if base.unit else None


DETECTORS: tuple[Detector, ...] = (
    _lxc,
    _socket_unit,
    _container_scope,
    _machine,
    _session,
    _user_unit,
    _docker_engine,
    _conmon,
    _service,
    _scope,
)

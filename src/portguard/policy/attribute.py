"""Who owns a socket: occupant -> cgroup -> unit -> service, socket unit, session, container, self.

What cannot be found out (no cgroup, a silent bus, no Docker API) is recorded as a gap
for the report; attribution never fails the verdict the probe already gave.
"""

import functools
import os
import pwd
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from portguard.host import cgroups, docker, podman, processes, sysctl, unitfiles
from portguard.host.occupants import Occupant
from portguard.host.units import FactsUnavailable, UnitFacts, unit_facts
from portguard.policy import runtimes
from portguard.policy.owners import Attribution, Holding, Owner, OwnerKind
from portguard.registry.localports import LocalPorts

_SESSION_SCOPE = re.compile(r"^session-[^/]+\.scope$")
_DOCKER_HOLDERS = ("docker-proxy", "dockerd")
_DOCKER_UNIT = "docker.service"
_INODE_SEARCH_SECONDS = 0.3
_OPTIONS_READ_LIMIT = 64  # sockets whose options are read from their holder, per attribution


@dataclass(frozen=True)
class Context:
    """Where attribution looks; tests and other namespaces substitute their own."""

    self_cgroup: str | None = None  # the checked unit's cgroup: its sockets are "self"
    cgroup_mount: Path | None = None
    facts_timeout: float = 1.0
    own_pids: frozenset[int] = field(default_factory=frozenset)
    facts: Callable[..., dict[str, UnitFacts]] = unit_facts
    docker_listing: Callable[..., list[dict[str, Any]]] = docker.containers
    local_ports: Callable[[], LocalPorts | None] = sysctl.read_local_ports
    # Search every process for a socket its own cgroup does not hold (root only: others' fds
    # are not ours to read); 0: never.
    inode_search_seconds: float = 0.0

    @classmethod
    def here(cls, *, self_cgroup: str | None, facts_timeout: float) -> "Context":
        search = _INODE_SEARCH_SECONDS if os.geteuid() == 0 else 0.0
        return cls(self_cgroup, cgroups.cgroup2_mount(), facts_timeout, frozenset({os.getpid()}),
                   inode_search_seconds=search)  # fmt: skip


def attribute(
    occupants: Iterable[Occupant], context: Context, also: Sequence[str] = ()
) -> Attribution:
    """Owners of OCCUPANTS; ALSO names units whose facts the caller wants from the same query."""
    occupants = list(occupants)
    gaps: list[str] = []
    mount = context.cgroup_mount
    ids = {o.cgroup_id for o in occupants if o.cgroup_id}
    paths = cgroups.paths_of_ids(ids, mount) if mount else {}
    if ids and mount is None:
        gaps.append("no cgroup2 mount: socket owners cannot be mapped to units")
    names = sorted({u for p in paths.values() if (u := cgroups.unit_of(p))} | set(also))
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


@functools.lru_cache(maxsize=1024)
def user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


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
            options = processes.options_of(
                occupant.inode, pid, self._fds.get((occupant.inode, pid))
            )
        return Holding(occupant, owner, options)

    def owner(self, occupant: Occupant, path: str | None) -> Owner:
        if occupant.is_time_wait:
            return Owner(OwnerKind.TIME_WAIT)
        user = user_name(occupant.uid)
        holders = self._holders(occupant, path) if path else []
        if not holders and not (path and (cgroups.unit_of(path) or "").endswith(".socket")):
            # The cgroup's evidence failed (gone, or none of its processes holds the socket:
            # one process made it, another holds it, as Podman's conmon does); a socket unit's
            # listener is PID 1's by design.
            found = self._holder_anywhere(occupant)
            if found is not None:
                path, holders = found
        if path is None:
            self.gaps.append(f"the cgroup of the socket on {occupant} is not visible from here")
            return Owner(OwnerKind.UNKNOWN, user=user)
        unit = cgroups.unit_of(path)
        pid = holders[0] if holders else None
        base = Owner(OwnerKind.UNKNOWN, unit, pid, self._comm(pid), user, cgroup=path,
                     pids=tuple(holders))  # fmt: skip
        self_cgroup = self.context.self_cgroup
        if self_cgroup and self_cgroup != "/" and cgroups.is_within(path, self_cgroup):
            return _with(base, kind=OwnerKind.SELF, unit=cgroups.unit_of(self_cgroup) or unit)
        if unit is None:
            return base
        return self._by_unit(occupant, base, unit, path)

    def _by_unit(self, occupant: Occupant, base: Owner, unit: str, path: str) -> Owner:
        facts = self.facts.get(unit)
        if unit.endswith(".socket"):
            # The socket unit's listener is held by PID 1 on the unit's behalf.
            return _with(base, kind=OwnerKind.SOCKET, pid=1, comm=self._comm(1),
                         activates=facts.triggers if facts else (),
                         transient=unitfiles.is_transient(unit))  # fmt: skip
        scope = runtimes.container_scope(unit, path)
        if scope:
            # The container's own process holds the port: it is on the host's network (a
            # published port is held by the engine's proxy, in the engine's cgroup).
            found = docker.by_id(scope.id, self._docker()) if scope.runtime == "docker" else None
            return _with(base, kind=OwnerKind.CONTAINER, container=scope.id,
                         container_name=found.name if found else None,
                         runtime=str(scope.runtime), host_network=True)  # fmt: skip
        machine = runtimes.machine_name(unit, path)
        if machine:
            return _with(base, kind=OwnerKind.MACHINE, container_name=machine)
        if _SESSION_SCOPE.match(unit):
            return _with(base, kind=OwnerKind.SESSION)
        if re.search(r"/user@\d+\.service/", path):
            if base.comm in runtimes.ROOTLESS_FORWARDERS:
                # Rootless Podman's port forwarder: the container is the owner, not its scope.
                return self._rootless(base, path)
            return _with(base, kind=OwnerKind.USER_SERVICE)
        if base.comm in _DOCKER_HOLDERS or unit == _DOCKER_UNIT:
            # docker.service holds only what its containers publish, whichever of its
            # processes it is (an unprivileged reader sees none of them).
            return self._published(occupant, base)
        conmon = podman.conmon_container(processes.cmdline(base.pid)) if base.pid else None
        if conmon:
            # Podman's conmon holds a rootful container's port, in the cgroup of whatever ran
            # podman: a session, its own libpod-conmon scope, or a Quadlet unit (then the fix
            # is that unit's).
            podman_runtime = str(runtimes.Runtime.PODMAN)
            return _with(base, kind=OwnerKind.CONTAINER, container=conmon[0],
                         container_name=conmon[1], runtime=podman_runtime)  # fmt: skip
        if unit.endswith(".service"):
            # The process holding the socket, when its fds could be read (a service's listener
            # may be a child of its MainPID); otherwise systemd's MainPID.
            pid = base.pid or (facts.main_pid if facts and facts.main_pid else None)
            return _with(base, kind=OwnerKind.SERVICE, pid=pid, comm=self._comm(pid),
                         transient=unitfiles.is_transient(unit))  # fmt: skip
        return _with(base, kind=OwnerKind.SCOPE)

    def _comm(self, pid: int | None) -> str | None:
        # Once per process: a busy service's thousands of connections name the same few.
        if not pid:
            return None
        if pid not in self._comms:
            self._comms[pid] = processes.comm(pid)
        return self._comms[pid]

    def _rootless(self, base: Owner, path: str) -> Owner:
        mount = self.context.cgroup_mount
        found = podman.rootless_container(path, mount) if mount else None
        if found is None:
            self.gaps.append(
                "the rootless container's namespace could not be read (as root it can)"
            )
        return _with(base, kind=OwnerKind.CONTAINER, runtime=str(runtimes.Runtime.PODMAN),
                     container=found[0] if found else None,
                     container_name=found[1] if found else None)  # fmt: skip

    def _holder_anywhere(self, occupant: Occupant) -> tuple[str, list[int]] | None:
        """The process holding the socket, found by its inode, and that process's cgroup."""
        seconds = self.context.inode_search_seconds
        if not seconds or not occupant.inode or self._search_spent >= seconds:
            return None
        started = time.monotonic()
        pid = processes.holder_by_inode(occupant.inode, skip=self.context.own_pids,
                                        seconds=seconds - self._search_spent)  # fmt: skip
        self._search_spent += time.monotonic() - started
        path = cgroups.cgroup_of(pid) if pid else None
        return (path, [pid]) if pid and path else None

    def _holders(self, occupant: Occupant, path: str) -> list[int]:
        mount = self.context.cgroup_mount
        if mount is None or not occupant.inode:
            return []
        held = self._held.get(path)
        if held is None:
            # Once per cgroup: every socket its processes hold. Only fds we may read are
            # looked at: as an unprivileged User= the unit is still named, and the PID comes
            # from systemd's MainPID when the bus answers.
            candidates = [p for p in cgroups.pids(path, mount) if p not in self.context.own_pids]
            held = processes.socket_holders(candidates, self.wanted.get(path))
            self._held[path] = held
            for inode, holders in held.items():
                for pid, fd in holders:
                    self._fds.setdefault((inode, pid), fd)
        return list(dict.fromkeys(pid for pid, _ in held.get(occupant.inode, ())))

    def _docker(self) -> list[dict[str, Any]]:
        if self._listing is None:
            try:
                self._listing = self.context.docker_listing(timeout=1.0)
            except OSError as exc:
                self.gaps.append(f"the Docker API did not answer ({exc})")
                self._listing = []
        return self._listing

    def _published(self, occupant: Occupant, base: Owner) -> Owner:
        found = docker.publishing(
            occupant.port, str(occupant.proto), self._docker(), str(occupant.address)
        )
        docker_runtime = str(runtimes.Runtime.DOCKER)
        if found is None:
            # No API to ask (an unprivileged guard cannot read docker.sock): docker-proxy's
            # own arguments still say where the port goes, and which process it is.
            mount = self.context.cgroup_mount
            pids = cgroups.pids(base.cgroup, mount) if base.cgroup and mount else []
            proxy = docker.proxy_for(occupant.port, str(occupant.proto), pids)
            if proxy is None:
                return _with(base, kind=OwnerKind.CONTAINER, runtime=docker_runtime)
            return _with(base, kind=OwnerKind.CONTAINER, runtime=docker_runtime, pid=proxy[0],
                         comm=self._comm(proxy[0]), forwards_to=proxy[1])  # fmt: skip
        return _with(base, kind=OwnerKind.CONTAINER, container=found.id,
                     container_name=found.name, runtime=docker_runtime)  # fmt: skip


def _with(owner: Owner, **changes: Any) -> Owner:
    return replace(owner, **changes)

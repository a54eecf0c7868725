"""The host as attribution reads it: cgroups, /proc, the passwd database, systemd, the Docker
API and Podman's scopes, each behind one callable of policy/attribute.Context."""

import os
import time

from portguard.host import cgroups, docker, podman, processes, sysctl, unitfiles, units
from portguard.policy.attribute import Context

# How long attribution may search every process for a socket its own cgroup does not hold.
_INODE_SEARCH_SECONDS = 0.3


def here(*, self_cgroup: str | None, facts_timeout: float) -> Context:
    """This host, as this process may read it; SELF_CGROUP: the checked unit's own cgroup."""
    mount = cgroups.cgroup2_mount()
    root = os.geteuid() == 0
    return Context(
        cgroup_paths=(lambda ids: cgroups.paths_of_ids(ids, mount)) if mount else None,
        cgroup_pids=lambda path: cgroups.pids(path, mount) if mount else [],
        cgroup_of=cgroups.cgroup_of,
        socket_holders=processes.socket_holders,
        holder_by_inode=lambda inode, skip, seconds: processes.holder_by_inode(
            inode, skip=skip, seconds=seconds
        ),
        comm=processes.comm,
        cmdline=processes.cmdline,
        options_of=processes.options_of,
        user_name=processes.user_name,
        is_transient=unitfiles.is_transient,
        facts=units.unit_facts,
        docker_listing=docker.containers,
        rootless_container=lambda path: podman.rootless_container(path, mount) if mount else None,
        local_ports=sysctl.read_local_ports,
        clock=time.monotonic,
        self_cgroup=self_cgroup,
        facts_timeout=facts_timeout,
        own_pids=frozenset({os.getpid()}),
        # Others' fds are not ours to read: only root searches every process.
        inode_search_seconds=_INODE_SEARCH_SECONDS if root else 0.0,
    )

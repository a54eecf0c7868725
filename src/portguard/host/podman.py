"""Podman's containers, named from what its processes show: conmon's command line, and for
rootless Podman the network namespace a port forwarder serves.

Podman has no daemon to ask. Each container has a conmon (`conmon … -c <id> -n <name> …`);
rootful, conmon holds the container's published ports itself. Rootless, a forwarder in the
user's `podman-NNN.scope` holds them: pasta (its `--netns PATH` names the container's
namespace) or rootlessport (which runs inside that namespace, beside slirp4netns and its
`--netns-type=path PATH`). The container's own processes share that namespace, in
`libpod-<id>.scope` beside the forwarder's scope, and its conmon sits in
`libpod-conmon-<id>.scope`. Another user's /proc/PID/ns is root's to read: unprivileged,
nothing is found and the fix says how to name the container.
"""

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path

from portguard.host import cgroups, processes

_CONTAINER_SCOPE = re.compile(r"^libpod-([0-9a-f]{64})\.scope$")


def conmon_container(cmdline: tuple[str, ...]) -> tuple[str, str] | None:
    """(id, name) from conmon's command line (`conmon … -c <id> -n <name> …`)."""
    if not cmdline or not cmdline[0].endswith("conmon"):
        return None
    args = dict(itertools.pairwise(cmdline[1:]))  # each flag with the word after it
    container, name = args.get("-c"), args.get("-n")
    return (container, name) if container and name else None


def netns_inode(pid: int | str) -> int | None:
    """The inode of PID's network namespace (`self` for ours); None when not ours to read."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _namespace_paths(cmdline: tuple[str, ...]) -> list[str]:
    """The namespace files a forwarder names: pasta's `--netns PATH`, slirp4netns's
    `--netns-type=path PATH` (Podman keeps them under a `netns/` directory)."""
    values = (arg.partition("=")[2] if arg.startswith("--netns=") else arg for arg in cmdline)
    return list(dict.fromkeys(v for v in values if v.startswith("/") and "/netns/" in v))


def served_namespaces(pids: Sequence[int], mount_ns_pids: Sequence[int] = ()) -> set[int]:
    """The network namespaces the forwarders PIDS serve: their own when it is not ours
    (rootlessport runs inside the container's), and those named on their command lines. A
    rootless namespace file is a bind mount in the user's own mount namespace, so its path is
    also looked up through the roots of MOUNT_NS_PIDS (Podman's pause process, conmon)."""
    ours = netns_inode("self")
    found: set[int] = set()
    for pid in pids:
        own = netns_inode(pid)
        if own is not None and own != ours:
            found.add(own)
        for path in _namespace_paths(processes.cmdline(pid)):
            for seen_from in ("", *(f"/proc/{p}/root" for p in (pid, *mount_ns_pids))):
                try:
                    found.add(os.stat(f"{seen_from}{path}").st_ino)
                except OSError:
                    continue
    found.discard(ours)
    return found


def rootless_container(scope: str, mount: Path) -> tuple[str, str | None] | None:
    """(id, name) of the rootless container a forwarder's SCOPE serves, found among the
    `libpod-<id>.scope` cgroups beside it by their network namespace; None when none is."""
    parent = scope.rsplit("/", 1)[0] or "/"
    siblings = [entry.name for entry in cgroups.subdirectories(mount / parent.lstrip("/"))]
    helpers = [pid for name in siblings if name.startswith(("podman-pause-", "libpod-conmon-"))
               for pid in cgroups.pids(f"{parent}/{name}", mount)]  # fmt: skip
    namespaces = served_namespaces(cgroups.pids(scope, mount), helpers)
    if not namespaces:
        return None
    matches = []
    for name in siblings:
        found = _CONTAINER_SCOPE.match(name)
        pids = cgroups.pids(f"{parent}/{name}", mount) if found else []
        if found and any(netns_inode(pid) in namespaces for pid in pids):
            conmon = f"{parent}/libpod-conmon-{found.group(1)}.scope"
            matches.append((found.group(1), _conmon_name(conmon, mount)))
    # A pod's containers share one namespace: its infra container is not the one to name.
    named = [m for m in matches if not (m[1] or "").endswith("-infra")] or matches
    return named[0] if named else None


def _conmon_name(scope: str, mount: Path) -> str | None:
    for pid in cgroups.pids(scope, mount):
        found = conmon_container(processes.cmdline(pid))
        if found:
            return found[1]
    return None

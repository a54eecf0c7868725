"""Containers, machines and the shared plumbing under them, recognised from a socket's cgroup
path and its holder's name; and the fix at the plumbing's own level.

Pure: the words come from the paths and names runtimes document. Docker and Podman name a
container's scope `docker-<id>.scope` and `libpod-<id>.scope` (their systemd cgroup
drivers); the kubelet's systemd cgroup driver puts a pod's containers under
`kubepods.slice/…/kubepods-<qos>-pod<uid>.slice/` as `cri-containerd-<id>.scope` or
`crio-<id>.scope`; systemd-nspawn's machines run in `machine.slice/machine-<name>.scope`
(systemd-machined(8)); LXC's containers in `lxc.payload.<name>` (lxc.container.conf(5)).
The words for each, and its fix, are kinds.py's. Shared plumbing -- what other services
stand on -- is never to be stopped: its fix is its configuration, or moving the claim.
"""

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from portguard.policy.owners import Fix, Owner, Rows, container_label

if TYPE_CHECKING:
    from portguard.policy.owners import Occupying

_CONTAINER_SCOPE = re.compile(r"^(docker|libpod|cri-containerd|crio)-([0-9a-f]{12,64})\.scope$")
_MACHINE_SCOPE = re.compile(r"^machine-(.+)\.scope$")
# LXC 4.0 and later put a container's processes in `lxc.payload.NAME` at the top of the
# hierarchy it manages (lxc.cgroup.dir.container), outside systemd's slices; its monitor in
# `lxc.monitor.NAME`.
_LXC_PAYLOAD = re.compile(r"^/lxc\.payload\.([^/]+)(?:/|$)")
# Kubernetes' default NodePort range (kube-apiserver --service-node-port-range).
NODE_PORTS = range(30000, 32768)
# The port forwarders rootless Podman runs for a container's published ports.
ROOTLESS_FORWARDERS = ("pasta", "pasta.avx2", "rootlessport", "slirp4netns")


class Runtime(StrEnum):
    DOCKER = "docker"
    PODMAN = "podman"
    KUBERNETES = "kubernetes"
    CONTAINERD = "containerd"
    LXC = "lxc"


@dataclass(frozen=True, slots=True)
class ContainerScope:
    """A container's own cgroup, by its runtime."""

    runtime: Runtime
    id: str


def container_scope(unit: str, path: str) -> ContainerScope | None:
    """The container a scope unit is, from its name and where its cgroup sits."""
    found = _CONTAINER_SCOPE.match(unit)
    if found is None:
        return None
    prefix, container = found.groups()
    if "/kubepods" in path or prefix == "crio":
        return ContainerScope(Runtime.KUBERNETES, container)
    runtime = {"docker": Runtime.DOCKER, "libpod": Runtime.PODMAN}.get(prefix, Runtime.CONTAINERD)
    return ContainerScope(runtime, container)


def machine_name(unit: str, path: str) -> str | None:
    """The machine a `machine-NAME.scope` under machine.slice is (its name unescaped)."""
    found = _MACHINE_SCOPE.match(unit)
    if found is None or "/machine.slice/" not in f"{path}/":
        return None
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), found.group(1))


def lxc_name(path: str) -> str | None:
    """The LXC container whose payload cgroup PATH is in (its own units below it too)."""
    found = _LXC_PAYLOAD.match(path)
    return found.group(1) if found else None


# Shared plumbing: units others depend on, with the fix at their level (PORT substituted).
_PLUMBING = {
    "docker.service": (
        "a container published by docker.service holds it: 'docker ps --filter publish={port}' "
        "names it; 'docker stop' that container, or publish it on another port (never stop "
        "docker.service: every container stops)"
    ),
    "systemd-resolved.service": (
        "systemd-resolved's stub listener (the host's DNS) holds it: set DNSStubListener=no "
        "in a drop-in under /etc/systemd/resolved.conf.d/ and restart systemd-resolved, or "
        "bind the service to another address; never stop the host's resolver"
    ),
    "rpcbind.service": (
        "rpcbind holds it for NFS and other RPC services: move the claim to another port; stop "
        "rpcbind only if nothing here uses RPC"
    ),
    "rpcbind.socket": (
        "rpcbind holds it for NFS and other RPC services: move the claim to another port; stop "
        "rpcbind only if nothing here uses RPC"
    ),
    "kube-proxy.service": (
        "kube-proxy holds {port} for a Kubernetes Service's NodePort: 'kubectl get svc -A' "
        "names it; change its nodePort, or move the claim out of the NodePort range "
        "(30000-32767); never stop kube-proxy, which carries the cluster's networking"
    ),
    "systemd-machined.service": (
        "systemd-machined holds it: 'machinectl list' shows the machines; never stop "
        "systemd-machined"
    ),
    "containerd.service": (
        "containerd (the container runtime) holds it, often a random port of its own: move the "
        "claim; never stop containerd.service, every container on it would stop"
    ),
}
_PLUMBING_COMMS = {"kube-proxy": "kube-proxy.service"}


def plumbing_remedy(unit: str | None, comm: str | None, port: int) -> str | None:
    """The fix at the plumbing's level when UNIT (or the holder COMM) is shared plumbing."""
    key = unit if unit in _PLUMBING else _PLUMBING_COMMS.get(comm or "")
    return _PLUMBING[key].format(port=port) if key else None


# --- their words: described, shown by `why`, fixed, left out by `init` ------------------------


def container_describe(owner: Owner, process: str) -> str:
    what = container_label(owner)
    engine = f"{owner.runtime} " if owner.runtime not in (None, "docker") else ""
    subject = f"{engine}container {what}" if what else f"a {engine}container"
    if owner.forwards_to and not what:
        subject += f" at {owner.forwards_to}"
    rootless = owner.runtime == "podman" and owner.user not in (None, "root")
    whose = f" of {owner.user}" if rootless else ""
    via = owner.unit or "the container engine"
    return f"{subject}{whose} via {via}{process}"


def container_rows(occupying: "Occupying") -> Rows:
    owner = occupying.owner
    name = container_label(owner) or "not named by the engine"
    if owner.runtime and owner.runtime != "docker":
        name = f"{owner.runtime} {name}"
    if owner.host_network:
        unit = f" ({owner.unit})" if owner.unit else ""
        return [("container", f"{name}, its own process on the host's network{unit}")]
    engine = occupying.process.comm if occupying.process else "the engine"
    text = f"{name}, published by {engine}"
    text += f" in {owner.unit}" if owner.unit and not owner.unit.startswith("docker-") else ""
    forwards = f", forwards to {occupying.forwards_to}" if occupying.forwards_to else ""
    return [("container", text + forwards)]


def container_name_of(owner: Owner) -> str | None:
    return owner.container_name or owner.container


def on_host_network(owner: Owner) -> str | None:
    if owner.host_network:
        return "a container on the host's network, not a unit of its own, left out"
    return None


def docker_remedy(owner: Owner, fix: Fix) -> str:
    name = container_name_of(owner)
    if name is None:
        return (
            f"'docker ps --filter publish={fix.port}' names the container; 'docker stop' it, or "
            "publish it on another port (never stop docker.service: every container stops)"
        )
    if owner.host_network:
        return (
            f"'docker stop {name}': it runs on the host's network (--network host), so change "
            "the port its program listens on, or stop it"
        )
    return f"'docker stop {name}', or publish the container on another port"


def docker_left_out(owner: Owner) -> str | None:
    return on_host_network(owner) or (
        "a container published by docker.service, not a unit of its own, left out"
    )


def podman_remedy(owner: Owner, fix: Fix) -> str:
    name = container_name_of(owner)
    service = owner.unit if (owner.unit or "").endswith(".service") else None
    if service:
        return (
            f"'systemctl stop {service}', the unit that runs podman container {name}; or move "
            "its PublishPort= (a Quadlet unit is generated: the [Install] section of its "
            ".container file decides whether it starts at boot)"
        )
    if owner.user and owner.user != "root":
        what = f"'podman stop {name}'" if name else (
            f"'podman ps --filter publish={fix.port}' names the container, then 'podman stop NAME'"
        )  # fmt: skip
        return f"as {owner.user}: {what} (stopping its podman scope would only cut its network)"
    return f"'podman stop {name}'" if name else (
        f"'podman ps --filter publish={fix.port}' names the container; 'podman stop' it"
    )  # fmt: skip


def podman_left_out(owner: Owner) -> str | None:
    if (owner.unit or "").endswith(".service"):
        return None  # a service of its own runs the container (Quadlet's NAME.service)
    if owner.user not in (None, "root"):
        return f"{owner.user}'s rootless container, not the system's, left out"
    return on_host_network(owner) or (
        "a podman container, not a unit of its own (a Quadlet unit runs it as one), left out"
    )


def kubernetes_remedy(owner: Owner, fix: Fix) -> str:
    name = container_name_of(owner)
    return (
        f"a Kubernetes pod's container holds it: 'crictl ps --id {name}' (or 'kubectl "
        "get pods -A -o wide') names the pod; change the pod's hostPort or hostNetwork "
        "through Kubernetes, never the container runtime"
    )


def containerd_remedy(owner: Owner, fix: Fix) -> str:
    name = container_name_of(owner)
    return (
        f"a containerd container ({name}) holds it: stop it through whatever started it "
        "('ctr task ls' lists them), never containerd.service"
    )


def lxc_remedy(owner: Owner, fix: Fix) -> str:
    name = container_name_of(owner) or "NAME"
    return (
        f"'lxc-stop -n {name}' (or stop the unit that started it), or change the port its "
        "program listens on; never stop the LXC service, every container on it would stop"
    )


def machine_describe(owner: Owner, process: str) -> str:
    return f"machine {owner.container_name} ({owner.unit}, systemd-nspawn){process}"


def machine_remedy(owner: Owner, fix: Fix) -> str:
    return (
        f"'machinectl stop {owner.container_name or 'NAME'}' (or stop the unit that started "
        "it), or change the port its payload listens on; a machine's scope is transient, "
        "nothing to disable"
    )


def machine_rows(occupying: "Occupying") -> Rows:
    owner = occupying.owner
    return [("machine", f"{owner.container_name} (systemd-nspawn; {owner.unit})")]

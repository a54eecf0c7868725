"""Containers, machines and the shared plumbing under them, recognised from a socket's cgroup
path and its holder's name; and the clean fix for each, through its own supervisor.

Pure: the words come from the paths and names runtimes document. Docker and Podman name a
container's scope `docker-<id>.scope` and `libpod-<id>.scope` (their systemd cgroup
drivers); the kubelet's systemd cgroup driver puts a pod's containers under
`kubepods.slice/…/kubepods-<qos>-pod<uid>.slice/` as `cri-containerd-<id>.scope` or
`crio-<id>.scope`; systemd-nspawn's machines run in `machine.slice/machine-<name>.scope`
(systemd-machined(8)). Shared plumbing -- what other services stand on -- is never to be
stopped: its fix is its configuration, or moving the claim.
"""

import re
from dataclasses import dataclass
from enum import StrEnum

_CONTAINER_SCOPE = re.compile(r"^(docker|libpod|cri-containerd|crio)-([0-9a-f]{12,64})\.scope$")
_MACHINE_SCOPE = re.compile(r"^machine-(.+)\.scope$")
# Kubernetes' default NodePort range (kube-apiserver --service-node-port-range).
NODE_PORTS = range(30000, 32768)
# The port forwarders rootless Podman runs for a container's published ports.
ROOTLESS_FORWARDERS = ("pasta", "pasta.avx2", "rootlessport", "slirp4netns")


class Runtime(StrEnum):
    DOCKER = "docker"
    PODMAN = "podman"
    KUBERNETES = "kubernetes"
    CONTAINERD = "containerd"


@dataclass(frozen=True, slots=True)
class ContainerScope:
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


def container_remedy(
    runtime: Runtime | None,
    name: str | None,
    *,
    published: bool,
    port: int,
    user: str | None,
    service: str | None = None,
) -> str:
    """The fix for a container holding a port: through its supervisor (SERVICE, the unit that
    runs it, as Quadlet's do), else its runtime; never the runtime itself."""
    if service and runtime == Runtime.PODMAN:
        return (
            f"'systemctl stop {service}', the unit that runs podman container {name}; or move "
            "its PublishPort= (a Quadlet unit is generated: the [Install] section of its "
            ".container file decides whether it starts at boot)"
        )
    match runtime:
        case Runtime.KUBERNETES:
            return (
                f"a Kubernetes pod's container holds it: 'crictl ps --id {name}' (or 'kubectl "
                "get pods -A -o wide') names the pod; change the pod's hostPort or hostNetwork "
                "through Kubernetes, never the container runtime"
            )
        case Runtime.PODMAN if user and user != "root":
            what = f"'podman stop {name}'" if name else (
                f"'podman ps --filter publish={port}' names the container, then 'podman stop NAME'"
            )  # fmt: skip
            return f"as {user}: {what} (stopping its podman scope would only cut its network)"
        case Runtime.PODMAN:
            return f"'podman stop {name}'" if name else (
                f"'podman ps --filter publish={port}' names the container; 'podman stop' it"
            )  # fmt: skip
        case Runtime.CONTAINERD:
            return (
                f"a containerd container ({name}) holds it: stop it through whatever started it "
                "('ctr task ls' lists them), never containerd.service"
            )
    if name is None:
        return (
            f"'docker ps --filter publish={port}' names the container; 'docker stop' it, or "
            "publish it on another port (never stop docker.service: every container stops)"
        )
    if not published:
        return (
            f"'docker stop {name}': it runs on the host's network (--network host), so change "
            "the port its program listens on, or stop it"
        )
    return f"'docker stop {name}', or publish the container on another port"


def machine_remedy(name: str) -> str:
    return (
        f"'machinectl stop {name}' (or stop the unit that started it), or change the port its "
        "payload listens on; a machine's scope is transient, nothing to disable"
    )


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

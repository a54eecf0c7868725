"""Containers, machines and shared plumbing, from cgroup paths and holders' names as the
runtimes document them (issue 14). Pure: these are the names, not live runtimes -- the
live proofs are the system tests; Kubernetes is only here, labelled as not live.

Naming sources: Docker's and Podman's systemd cgroup drivers name a container's scope
`docker-<id>.scope` / `libpod-<id>.scope` (docker's daemon/cgroups, podman's
libpod/runtime_ctr); the kubelet's systemd cgroup driver nests pods as
`kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice` and containerd's CRI
plugin names the container `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`
(kubernetes.io/docs/setup/production-environment/container-runtimes/#systemd-cgroup-driver);
systemd-machined registers an nspawn machine as `machine.slice/machine-<name>.scope`, its
payload in `…/payload` (systemd-machined.service(8), SANDBOX.md).
"""

import re

import pytest

from portguard.policy.owners import Owner, OwnerKind
from portguard.policy.report import describe_owner, remedy_for
from portguard.policy.runtimes import (
    Runtime,
    container_scope,
    machine_name,
)

ID = "3f2a9c0b1d2e" + "4" * 52
POD = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b1c2d3e_4f5a.slice"


@pytest.mark.parametrize(
    ("unit", "path", "runtime"),
    [
        (f"docker-{ID}.scope", f"/system.slice/docker-{ID}.scope", Runtime.DOCKER),
        (f"libpod-{ID}.scope", f"/machine.slice/libpod-{ID}.scope", Runtime.PODMAN),
        (f"cri-containerd-{ID}.scope", f"{POD}/cri-containerd-{ID}.scope", Runtime.KUBERNETES),
        (f"crio-{ID}.scope", f"{POD}/crio-{ID}.scope", Runtime.KUBERNETES),
        (f"cri-containerd-{ID}.scope", f"/system.slice/cri-containerd-{ID}.scope",
         Runtime.CONTAINERD),
    ],
)  # fmt: skip
def test_a_container_scope_names_its_runtime(unit: str, path: str, runtime: Runtime) -> None:
    found = container_scope(unit, path)
    assert found is not None and (found.runtime, found.id) == (runtime, ID)


def test_what_is_not_a_container_scope() -> None:
    assert container_scope("nginx.service", "/system.slice/nginx.service") is None
    assert container_scope(f"libpod-conmon-{ID}.scope", "/machine.slice/x") is None


def test_a_machine_is_named_from_its_scope_unescaped() -> None:
    assert machine_name("machine-bbm.scope", "/machine.slice/machine-bbm.scope/payload") == "bbm"
    assert machine_name("machine-web\\x2d1.scope", "/machine.slice/machine-web\\x2d1.scope") == (
        "web-1"
    )
    assert machine_name("machine-bbm.scope", "/system.slice/machine-bbm.scope") is None


# --- the fix never stops shared plumbing ----------------------------------------------------

PLUMBING = ("docker.service", "containerd.service", "kube-proxy.service",
            "systemd-machined.service", "systemd-resolved.service", "rpcbind.service",
            "rpcbind.socket")  # fmt: skip
OWNERS = [
    Owner(OwnerKind.CONTAINER, "docker.service", 12, "docker-proxy", "root",
          runtime="docker"),  # an unprivileged guard: the API did not answer
    Owner(OwnerKind.CONTAINER, "docker.service", 12, "docker-proxy", "root", container=ID,
          container_name="web", runtime="docker"),
    Owner(OwnerKind.CONTAINER, f"docker-{ID}.scope", 40, "httpd", "root", container=ID,
          container_name="web", runtime="docker", host_network=True),
    Owner(OwnerKind.CONTAINER, f"cri-containerd-{ID}.scope", 41, "nginx", "root",
          container=ID, runtime="kubernetes", host_network=True),
    Owner(OwnerKind.CONTAINER, "podman-1234.scope", 42, "pasta.avx2", "alice",
          runtime="podman"),
    Owner(OwnerKind.CONTAINER, f"libpod-conmon-{ID}.scope", 43, "conmon", "root",
          container=ID, container_name="web", runtime="podman"),
    Owner(OwnerKind.MACHINE, "machine-bbm.scope", 44, "python3", "root", container_name="bbm"),
    Owner(OwnerKind.SCOPE, "run-r42.scope", 45, "sleep", "root"),
    Owner(OwnerKind.SERVICE, "kube-proxy.service", 46, "kube-proxy", "root"),
    Owner(OwnerKind.SCOPE, "k8s.scope", 46, "kube-proxy", "root"),
    Owner(OwnerKind.SERVICE, "systemd-resolved.service", 47, "systemd-resolve", "systemd-resolve"),
    Owner(OwnerKind.SOCKET, "rpcbind.socket", 1, "systemd"),
    Owner(OwnerKind.SERVICE, "containerd.service", 48, "containerd", "root"),
    Owner(OwnerKind.SERVICE, "systemd-machined.service", 49, "systemd-machine", "root"),
    Owner(OwnerKind.CONTAINER, "webq.service", 50, "conmon", "root", container=ID,
          container_name="webq", runtime="podman"),  # a Quadlet unit
    Owner(OwnerKind.CONTAINER, "podman-1234.scope", 42, "pasta.avx2", "alice", container=ID,
          container_name="webu", runtime="podman"),  # rootless, named by its namespace
    Owner(OwnerKind.CONTAINER, "docker.service", 51, "docker-proxy", "prometheus",
          runtime="docker", forwards_to="172.17.0.2:80"),  # unprivileged: from its arguments
]  # fmt: skip


@pytest.mark.parametrize("owner", OWNERS, ids=lambda o: f"{o.kind}-{o.unit}-{o.comm}")
def test_no_fix_stops_shared_plumbing_disables_a_scope_or_signals(owner: Owner) -> None:
    remedy = remedy_for(owner, unit="myapp.service", port=8080, proto="tcp")
    for unit in PLUMBING:
        assert not re.search(rf"'systemctl (stop|disable|mask)[^']*{re.escape(unit)}", remedy), (
            remedy
        )
    assert not re.search(r"systemctl (--user [^']*)?(disable|mask) [^']*\.scope", remedy), remedy
    assert not re.search(r"\bkill\b|SIG[A-Z]+", remedy), remedy
    assert "stop kube-proxy" not in remedy.replace("never stop kube-proxy", "")


def test_each_runtime_gets_its_own_fix() -> None:
    def fix(owner: Owner) -> str:
        return remedy_for(owner, unit="myapp.service", port=8080, proto="tcp")

    unnamed, named, host, kube, rootless, conmon, machine = OWNERS[:7]
    assert "'docker ps --filter publish=8080'" in fix(unnamed)
    assert fix(named) == "'docker stop web', or publish the container on another port"
    assert "--network host" in fix(host) and "publish" not in fix(host)
    assert "crictl ps --id" in fix(kube) and "docker" not in fix(kube)
    assert fix(rootless).startswith("as alice: 'podman ps --filter publish=8080'")
    assert fix(conmon) == "'podman stop web'"
    assert fix(machine).startswith("'machinectl stop bbm'")
    assert "DNSStubListener=no" in fix(OWNERS[10])
    assert "nodePort" in fix(OWNERS[8]) and "nodePort" in fix(OWNERS[9])
    assert describe_owner(rootless) == (
        "a podman container of alice via podman-1234.scope (pid 42 pasta.avx2)"
    )
    assert describe_owner(unnamed) == "a container via docker.service (pid 12 docker-proxy)"
    quadlet, named_rootless, proxied = OWNERS[14:17]
    assert fix(quadlet).startswith("'systemctl stop webq.service', the unit that runs podman")
    assert "systemctl disable" not in fix(quadlet)
    assert fix(named_rootless) == (
        "as alice: 'podman stop webu' (stopping its podman scope would only cut its network)"
    )
    assert describe_owner(proxied) == (
        "a container at 172.17.0.2:80 via docker.service (pid 51 docker-proxy)"
    )
    assert "'docker ps --filter publish=8080'" in fix(proxied)
    assert (
        describe_owner(machine)
        == "machine bbm (machine-bbm.scope, systemd-nspawn) (pid 44 python3)"
    )

"""A port that answers while nothing listens: NAT rules as owners (DESIGN rule 5), in a real
systemd, with the kernel as the oracle.

Each shape is written into the sandbox's own network namespace, as the tool that owns it
writes it; then a client in another namespace (another host: `client`, 192.0.2.20) connects to
this host's 192.0.2.10, and the test asserts where the connection really lands -- the
registered service, which greets "service", or the redirect's target (a "pod" namespace at
10.244.1.5:80, or another local port), which greets "pod" or "other" (and lets the client
close first, so no TIME-WAIT stays on the server's port). `check` must agree:
exit 69 `redirected` exactly when the connection lands elsewhere, and a start that goes ahead
whenever it would have reached the service.

The kube-proxy rulesets are written in the exact shapes its sources produce (labelled: no
kubelet or kube-proxy runs here): iptables mode from pkg/proxy/iptables/proxier.go
(KUBE-SERVICES → KUBE-NODEPORTS with the `ns/svc:port` comment → KUBE-EXT-* → KUBE-SVC-* with
`statistic` → KUBE-SEP-* DNAT), nftables mode from pkg/proxy/nftables/proxier.go (table
`kube-proxy`, `fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap
@service-nodeports`, `goto external-HASH-ns/svc/tcp/port`, `numgen random mod N vmap`,
`endpoint-…` chains ending in `dnat to`).
"""

from __future__ import annotations

import json
import shlex

import pytest

from tests.kernel.nat_differential import GREETER
from tests.system.guarded import (
    PYTHON,
    as_user,
    guarded_unit,
    portguard,
    start_guarded,
    write_registry,
)
from tests.system.sandbox import Sandbox, wait_for

HOST, CLIENT, POD = "192.0.2.10", "192.0.2.20", "10.244.1.5"
NODEPORT = 30080

CONNECT = (
    "import socket, sys\n"
    "try:\n c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    " print(c.recv(100).decode() or 'nothing')\n"
    "except OSError as e:\n print(type(e).__name__)"
)


def greeter(host: str, port: int, name: str) -> str:
    return f"{PYTHON} -c {shlex.quote(GREETER)} {host} {port} {name}"


@pytest.fixture
def net(sandbox: Sandbox) -> Sandbox:
    """Another host (netns `client`) on 192.0.2.0/24 and a pod (netns `pod`) behind this one."""
    script = f"""
        set -e
        ip link set lo up
        ip netns add client; ip netns add pod
        ip link add pg0 type veth peer name pg1; ip link set pg1 netns client
        ip addr add {HOST}/24 dev pg0; ip link set pg0 up
        ip -n client addr add {CLIENT}/24 dev pg1; ip -n client link set pg1 up
        ip -n client link set lo up
        ip link add pg2 type veth peer name pg3; ip link set pg3 netns pod
        ip addr add 10.244.1.1/24 dev pg2; ip link set pg2 up
        ip -n pod addr add {POD}/24 dev pg3; ip -n pod link set pg3 up; ip -n pod link set lo up
        ip -n pod route add default via 10.244.1.1
        sysctl -qw net.ipv4.ip_forward=1
    """
    sandbox.run("sh", "-c", script)
    sandbox.run("systemd-run", "--unit=pod-web", "-p", "NetworkNamespacePath=/run/netns/pod",
                *shlex.split(greeter(POD, 80, "pod")))  # fmt: skip
    return sandbox


def lands(sandbox: Sandbox, port: int) -> str:
    """Where a connection from the other host to this host's PORT lands: the greeting."""
    out = sandbox.run("ip", "netns", "exec", "client", PYTHON, "-c", CONNECT, HOST, str(port))
    return out.stdout.strip()


def oracle(sandbox: Sandbox, port: int, extra_ports: tuple[int, ...] = ()) -> str:
    """Where the connection lands with the registered service running unguarded."""
    sandbox.run(
        "systemd-run", "--unit=unguarded", *shlex.split(greeter("0.0.0.0", port, "service"))
    )
    for p in extra_ports:
        sandbox.run("systemd-run", f"--unit=unguarded-{p}",
                    *shlex.split(greeter("0.0.0.0", p, "other")))  # fmt: skip
    wait_for(lambda: lands(sandbox, port) not in ("ConnectionRefusedError",) or None,
             timeout=10, what="the unguarded service up")  # fmt: skip
    landed = lands(sandbox, port)
    for unit in ["unguarded", *(f"unguarded-{p}" for p in extra_ports)]:
        sandbox.run("systemctl", "stop", unit)
    return landed


def guarded(sandbox: Sandbox, port: int, *, listen: str | None = None):  # type: ignore[no-untyped-def]
    write_registry(
        sandbox, f"version: 1\nunits:\n  myapp.service:\n    listen: [{listen or port}]\n"
    )
    guarded_unit(sandbox, "myapp.service", exec_start=greeter("0.0.0.0", port, "service"))
    sandbox.daemon_reload()
    return start_guarded(sandbox, "myapp.service")


def why(sandbox: Sandbox, port: int) -> tuple[int, dict[str, object]]:
    result = portguard(sandbox, "why", f"{port}/tcp", "--json")
    return result.returncode, json.loads(result.stdout)


def the_others_agree(sandbox: Sandbox, port: int, verdict: str) -> None:
    """`why`, `audit` and `wait` on the same port say what `check` said (VERDICT), with the
    registered service stopped: redirected is a holder to all three, partly-redirected a
    remark that changes no exit status, free nothing at all."""
    sandbox.run("systemctl", "stop", "myapp.service")
    certain = verdict == "redirected"
    code, data = why(sandbox, port)
    assert code == (1 if certain else 0), data
    redirects = data.get("redirects") or []
    assert [r["certain"] for r in redirects] == ([] if verdict == "free" else [certain]), data
    audited = portguard(sandbox, "audit", "--format", "json")
    row = next(r for r in json.loads(audited.stdout)["claims"] if r["port"] == port)
    assert row["status"] == ("redirected" if certain else "idle"), row
    assert (row["redirect"] is None) == (verdict == "free"), row
    assert audited.returncode == (1 if certain else 0), audited.stderr
    waited = portguard(sandbox, "wait", f"{port}/tcp", "--timeout", "500ms")
    assert waited.returncode == (75 if certain else 0), waited.stderr


# The shapes: (name, commands run in the sandbox, the unit owning the rule, its fields).

KUBE_IPTABLES = [
    "iptables -t nat -N KUBE-SERVICES", "iptables -t nat -N KUBE-NODEPORTS",
    "iptables -t nat -N KUBE-MARK-MASQ", "iptables -t nat -N KUBE-EXT-6E7XQMQ4RAYOWTTM",
    "iptables -t nat -N KUBE-SVC-6E7XQMQ4RAYOWTTM", "iptables -t nat -N KUBE-SEP-OAF3JVM2EJ5JLHWC",
    "iptables -t nat -N KUBE-SEP-ZWF5NNNXMLC3WYR2",
    *(f"iptables -t nat -A {hook} -m comment --comment 'kubernetes service portals' "
      "-j KUBE-SERVICES" for hook in ("PREROUTING", "OUTPUT")),
    "iptables -t nat -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    "iptables -t nat -A KUBE-SERVICES -m comment --comment 'kubernetes service nodeports; NOTE: "
    "this must be the last rule in this chain' -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    f"iptables -t nat -A KUBE-NODEPORTS -m comment --comment default/web:http -p tcp -m tcp "
    f"--dport {NODEPORT} -j KUBE-EXT-6E7XQMQ4RAYOWTTM",
    "iptables -t nat -A KUBE-EXT-6E7XQMQ4RAYOWTTM -m comment --comment 'masquerade traffic for "
    "default/web:http external destinations' -j KUBE-MARK-MASQ",
    "iptables -t nat -A KUBE-EXT-6E7XQMQ4RAYOWTTM -j KUBE-SVC-6E7XQMQ4RAYOWTTM",
    f"iptables -t nat -A KUBE-SVC-6E7XQMQ4RAYOWTTM -m comment --comment 'default/web:http -> "
    f"{POD}:80' -m statistic --mode random --probability 0.50000000000 "
    "-j KUBE-SEP-OAF3JVM2EJ5JLHWC",
    f"iptables -t nat -A KUBE-SVC-6E7XQMQ4RAYOWTTM -m comment --comment 'default/web:http -> "
    f"{POD}:80' -j KUBE-SEP-ZWF5NNNXMLC3WYR2",
]  # fmt: skip
for sep in ("KUBE-SEP-OAF3JVM2EJ5JLHWC", "KUBE-SEP-ZWF5NNNXMLC3WYR2"):
    KUBE_IPTABLES += [
        f"iptables -t nat -A {sep} -m comment --comment default/web:http -s {POD}/32 "
        "-j KUBE-MARK-MASQ",
        f"iptables -t nat -A {sep} -m comment --comment default/web:http -p tcp -m tcp "
        f"-j DNAT --to-destination {POD}:80",
    ]

EXTERNAL = "external-6E7XQMQ4-default/web/tcp/http"
SERVICE = "service-6E7XQMQ4-default/web/tcp/http"
ENDPOINT = f"endpoint-OAF3JVM2-default/web/tcp/http__{POD}/80"
KUBE_NFT = f"""
table ip kube-proxy {{
    comment "rules for kube-proxy"
    map service-nodeports {{
        type inet_proto . inet_service : verdict
        comment "NodePort traffic"
        elements = {{ tcp . {NODEPORT} : goto {EXTERNAL} }}
    }}
    chain nat-prerouting {{ type nat hook prerouting priority -100; policy accept; jump services; }}
    chain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}
    chain mark-for-masquerade {{ mark set mark or 0x4000; }}
    chain services {{
        fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
    }}
    chain {EXTERNAL} {{ jump mark-for-masquerade; goto {SERVICE}; }}
    chain {ENDPOINT} {{
        ip saddr {POD} jump mark-for-masquerade
        meta l4proto tcp dnat to {POD}:80
    }}
    chain {SERVICE} {{ numgen random mod 1 vmap {{ 0 : goto {ENDPOINT} }}; }}
}}
"""


def apply(sandbox: Sandbox, shape: list[str] | str) -> None:
    if isinstance(shape, str):
        sandbox.run("nft", "-f", "-", input=shape)
    else:
        for command in shape:
            sandbox.run(*shlex.split(command))


@pytest.mark.parametrize("shape", ["iptables-nft", "iptables-legacy", "nftables"])
def test_a_kube_proxy_nodeport_is_redirected_and_names_the_service(
    net: Sandbox, shape: str
) -> None:
    rules: list[str] | str = KUBE_NFT
    if shape.startswith("iptables"):
        rules = [c.replace("iptables ", f"{shape} ", 1) for c in KUBE_IPTABLES]
    apply(net, rules)
    assert oracle(net, NODEPORT) == "pod"  # the kernel: every client reaches the pod

    started = guarded(net, NODEPORT)

    assert started.result.active_state == "failed", started.result.status
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "redirected"
    assert entry["MESSAGE_ID"] == "3151251dc9cc4c22a56390d8cb01f8d5"
    assert entry["PORTGUARD_OWNER_KIND"] == "kubernetes-service"
    assert entry["PORTGUARD_OWNER_NAME"] == f"Kubernetes Service default/web (NodePort {NODEPORT})"
    assert entry["PORTGUARD_REDIRECT_TO"] == f"{POD}:80"
    assert entry["PORTGUARD_RULE_FAMILY"] == "ip"
    if shape == "nftables":
        assert entry["PORTGUARD_RULE_TABLE"] == "kube-proxy"
        assert entry["PORTGUARD_RULE_CHAIN"] == ENDPOINT
    else:
        table = "nat (legacy)" if shape == "iptables-legacy" else "nat"
        assert entry["PORTGUARD_RULE_TABLE"] == table
        assert entry["PORTGUARD_RULE_CHAIN"].startswith("KUBE-SEP-")
    assert "kubectl -n default get svc web" in entry["PORTGUARD_REMEDY"]
    assert "kube-proxy" not in entry["PORTGUARD_REMEDY"]  # never touch the plumbing
    assert lands(net, NODEPORT) == "pod"
    the_others_agree(net, NODEPORT, "redirected")


def test_a_redirect_rule_is_redirected(net: Sandbox) -> None:
    apply(net, ["iptables -t nat -A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 9000"])
    net.run("systemd-run", "--unit=other", *shlex.split(greeter("0.0.0.0", 9000, "other")))
    assert oracle(net, 8080) == "other"

    started = guarded(net, 8080)

    assert started.result.active_state == "failed", started.result.status
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "redirected"
    assert entry["PORTGUARD_OWNER_KIND"] == "nat-rule"
    assert entry["PORTGUARD_REDIRECT_TO"] == "this host's port 9000"
    assert entry["PORTGUARD_RULE_CHAIN"] == "PREROUTING"
    assert "iptables -t nat -S PREROUTING" in entry["PORTGUARD_REMEDY"]
    code, data = why(net, 8080)
    assert code == 1  # as for a holder
    assert data["redirects"] == [{
        "port": 8080, "proto": "tcp", "family": "IPv4", "certain": True, "owner_kind": "nat-rule",
        "owner": entry["PORTGUARD_OWNER_NAME"], "to": "this host's port 9000",
        "rule": {"family": "ip", "table": "nat", "chain": "PREROUTING",
                 "handle": int(entry["PORTGUARD_RULE_HANDLE"])},
        "remedy": data["redirects"][0]["remedy"],
    }]  # fmt: skip
    text = portguard(net, "why", "8080/tcp").stdout
    assert "nothing listens on 8080/tcp here, but IPv4 traffic to it is redirected by" in text
    the_others_agree(net, 8080, "redirected")


def test_a_redirect_to_the_units_own_other_port_is_its_plumbing(net: Sandbox) -> None:
    apply(net, ["iptables -t nat -A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 8081"])
    assert oracle(net, 8080, extra_ports=(8081,)) == "other"  # its own second listener

    started = guarded(net, 8080, listen="8080, 8081")

    assert started.result.active, started.result.status
    assert started.entries == []
    net.run("systemctl", "stop", "myapp.service")
    # Judged as the unit's claim, the redirect is its own plumbing; `why` and `wait` judge a
    # port on its own, with no unit to own the target: for them 8081 is not 8080's.
    audited = json.loads(portguard(net, "audit", "--format", "json").stdout)
    assert [r["redirect"] for r in audited["claims"] if r["port"] == 8080] == [None]


def test_a_source_restricted_dnat_warns_and_the_start_goes_ahead(net: Sandbox) -> None:
    apply(net, [f"iptables -t nat -A PREROUTING -s 198.51.100.0/24 -p tcp --dport 8080 "
                f"-j DNAT --to-destination {POD}:80"])  # fmt: skip
    assert oracle(net, 8080) == "service"  # this client is not in 198.51.100.0/24

    started = guarded(net, 8080)

    assert started.result.active, started.result.status
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "partly-redirected"
    assert entry["PRIORITY"] == "4"
    assert entry["MESSAGE_ID"] == "ae60ba2c632847eabb640ac82414c743"
    assert entry["PORTGUARD_REDIRECT_TO"] == f"{POD}:80"
    assert lands(net, 8080) == "service"
    the_others_agree(net, 8080, "partly-redirected")


def test_a_nat_rule_for_another_port_changes_nothing(net: Sandbox) -> None:
    apply(net, KUBE_IPTABLES)
    assert oracle(net, 8080) == "service"

    started = guarded(net, 8080)

    assert started.result.active, started.result.status
    assert started.entries == []
    the_others_agree(net, 8080, "free")
    # The mark the free path reads at the next start: this netns, the ruleset's generation.
    netns, generation, key = net.read_file("/run/portguard/nat-myapp.service").split()
    assert netns == net.run("stat", "-L", "-c", "%i", "/proc/1/ns/net").stdout.strip()
    assert generation.isdigit() and len(key) == 64


def test_audit_init_and_wait_agree_on_a_kube_proxy_node(net: Sandbox) -> None:
    apply(net, KUBE_NFT)
    assert lands(net, NODEPORT) == "pod"  # no listener at all: the kernel's answer
    write_registry(net, f"version: 1\nunits:\n  myapp.service:\n    listen: [{NODEPORT}]\n"
                        "  other.service:\n    listen: [8080]\n")  # fmt: skip

    audited = portguard(net, "audit", "--format", "json")
    assert audited.returncode == 1, audited.stderr  # drift
    rows = {row["unit"]: row for row in json.loads(audited.stdout)["claims"]}
    assert rows["myapp.service"]["status"] == "redirected"
    assert rows["myapp.service"]["redirect"]["owner_kind"] == "kubernetes-service"
    assert rows["other.service"]["status"] == "idle"
    metrics = portguard(net, "audit", "--format", "prometheus").stdout
    assert 'status="redirected",holder="Kubernetes Service default/web (NodePort 30080)"' in metrics
    assert 'portguard_claims{status="redirected"} 1' in metrics

    written = portguard(net, "init")
    assert written.returncode == 0, written.stderr
    assert (
        "# 1 Kubernetes NodePort (30080-30080), redirected by kube-proxy's rules" in written.stdout
    )
    assert f"{NODEPORT}/tcp" not in written.stdout.split("# Nothing listens")[0]  # not a claim

    waited = portguard(net, "wait", f"{NODEPORT}/tcp", "--timeout", "1s", "--json")
    assert waited.returncode == 75, waited.stderr  # a holder that stays
    assert "Kubernetes Service default/web" in json.loads(waited.stdout)["message"]
    net.run("nft", "delete", "table", "ip", "kube-proxy")
    assert portguard(net, "wait", f"{NODEPORT}/tcp", "--timeout", "1s").returncode == 0


CONTAINER = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
PORTMAP = "/usr/lib/cni/portmap"  # Debian's containernetworking-plugins (tools/setup)


def portmap(sandbox: Sandbox, command: str, host_port: int) -> None:
    """Call Debian's real CNI portmap plugin as containerd and CRI-O do (the CNI spec: the
    command and the container in the environment, the network's config on stdin)."""
    config = {
        "cniVersion": "0.4.0", "name": "cbr0", "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {"portMappings": [
            {"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": {"cniVersion": "0.4.0",
                       "interfaces": [{"name": "eth0", "sandbox": "/run/netns/pod"}],
                       "ips": [{"version": "4", "address": f"{POD}/24", "interface": 0}]},
    }  # fmt: skip
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": CONTAINER, "CNI_NETNS": "/run/netns/pod",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}  # fmt: skip
    sandbox.run(PORTMAP, input=json.dumps(config), env=env)


def test_a_pods_hostport_made_by_the_cni_portmap_plugin(net: Sandbox) -> None:
    # Debian 12's plugins (1.1.1) write iptables rules only: CNI-HOSTPORT-DNAT, CNI-DN-*.
    portmap(net, "ADD", 8080)
    assert oracle(net, 8080) == "pod"

    started = guarded(net, 8080)

    assert started.result.active_state == "failed", started.result.status
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "redirected"
    assert entry["PORTGUARD_OWNER_KIND"] == "hostport"
    assert entry["PORTGUARD_OWNER_NAME"] == f"a pod's hostPort 8080 (container {CONTAINER[:12]})"
    assert entry["PORTGUARD_RULE_CHAIN"].startswith("CNI-DN-")
    assert f"crictl ps --id {CONTAINER}" in entry["PORTGUARD_REMEDY"]
    the_others_agree(net, 8080, "redirected")

    portmap(net, "DEL", 8080)  # the pod is gone: its rules with it
    assert oracle(net, 8080) == "service"
    assert start_guarded(net, "myapp.service").result.active


def test_a_guard_that_cannot_read_the_ruleset_steps_aside_and_says_so(net: Sandbox) -> None:
    """No CAP_NET_ADMIN (a guard as the unit's own unprivileged user): the kernel refuses the
    netfilter dump. The start goes ahead (never a failed start for what could not be
    judged), and the entry says what was not found out (PORTGUARD_UNKNOWN)."""
    apply(net, KUBE_NFT)
    write_registry(net, f"version: 1\nunits:\n  myapp.service:\n    listen: [{NODEPORT}]\n")
    done = as_user(net, 65534, PYTHON, "-m", "portguard", "check", "myapp.service", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["verdict"] == "free"
    assert any("nftables ruleset" in gap and "not permitted" in gap for gap in data["gaps"]), data
    assert "nftables ruleset" in data["unknown"]
    # As root the same claim is judged: the start would not go ahead.
    assert portguard(net, "check", "myapp.service").returncode == 69

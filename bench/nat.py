"""Part of bench/bench.py: what NAT costs `check` (issue 26), on a kube-proxy-sized ruleset.

A network namespace of the bench's own (held by a sleeping child: nothing is left behind)
gets an address and kube-proxy's iptables-mode shape at scale, loaded with iptables-restore
(iptables-nft): SERVICES ClusterIP services, each with its KUBE-SVC and KUBE-SEP chains and a
DNAT, NODEPORTS of them with a NodePort -- about 23,000 rules. Inside it are timed: a bare
interpreter, `iptables-save` and `nft list ruleset` (what reading the ruleset costs the tools
users have), the first `check` after the ruleset changed (one touch of the ruleset before
each run: it reads and judges the ruleset), the next `check` of the same unit (its mark), and
the first `check` of another unit at the same generation (the mark of the ports no rule
names: one reading serves every unit). Stdlib only; the portguard of this checkout, as root.
"""

import statistics
import subprocess
import tempfile
from collections.abc import Callable, Sequence

SERVICES = 5000
NODEPORTS = 1000


def kube_rules(services: int = SERVICES, nodeports: int = NODEPORTS) -> str:
    """iptables-restore input in kube-proxy's shapes (pkg/proxy/iptables/proxier.go)."""
    chains = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
              ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]",
              ":KUBE-MARK-MASQ - [0:0]"]  # fmt: skip
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ]
    for i in range(services):
        name = f"ns{i % 50}/svc{i}:http"
        svc, sep, ext = (f"KUBE-{kind}-{i:016X}" for kind in ("SVC", "SEP", "EXT"))
        cluster, pod = f"10.96.{i // 250}.{i % 250 + 1}", f"10.244.{i // 250}.{i % 250 + 1}"
        chains += [f":{svc} - [0:0]", f":{sep} - [0:0]"]
        rules.append(f'-A KUBE-SERVICES -d {cluster}/32 -p tcp -m comment --comment '
                     f'"{name} cluster IP" -m tcp --dport 80 -j {svc}')  # fmt: skip
        if i < nodeports:
            chains.append(f":{ext} - [0:0]")
            rules += [f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}" -m tcp '
                      f"--dport {30000 + i} -j {ext}",
                      f"-A {ext} -j KUBE-MARK-MASQ", f"-A {ext} -j {svc}"]  # fmt: skip
        rules += [
            f'-A {svc} -m comment --comment "{name} -> {pod}:8080" -j {sep}',
            f'-A {sep} -s {pod}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ',
            f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT '
            f"--to-destination {pod}:8080",
        ]
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                 'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                 "-j KUBE-NODEPORTS")  # fmt: skip
    return "\n".join(["*nat", *chains, *rules, "COMMIT", ""])


class KubeNode:
    """The namespace: entered with nsenter --net=PATH."""

    def __init__(self) -> None:
        self.child = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
        self.path = f"/proc/{self.child.pid}/ns/net"
        self.prefix = ["nsenter", f"--net={self.path}"]
        self.run("ip link set lo up")
        self.run("ip link add pg0 type veth peer name pg1")
        self.run("ip addr add 192.0.2.10/24 dev pg0")
        self.run("ip link set pg0 up")
        self.run("ip link set pg1 up")
        with tempfile.NamedTemporaryFile("w", suffix=".rules") as rules:
            rules.write(kube_rules())
            rules.flush()
            subprocess.run([*self.prefix, "iptables-restore", rules.name], check=True,
                           timeout=300)  # fmt: skip
        saved = subprocess.run([*self.prefix, "iptables-save", "-t", "nat"], capture_output=True,
                               text=True, check=True, timeout=60).stdout  # fmt: skip
        self.rules = sum(1 for line in saved.splitlines() if line.startswith("-A "))

    def run(self, command: str) -> None:
        subprocess.run([*self.prefix, *command.split()], check=True, timeout=60)

    def touch(self) -> None:
        """A change of the ruleset (its generation moves), as kube-proxy's syncs make."""
        self.run("nft add table ip portguard-bench-touch")
        self.run("nft delete table ip portguard-bench-touch")

    def close(self) -> None:
        self.child.kill()
        self.child.wait()


Timed = Callable[[Sequence[str]], tuple[float, int, int]]


def nat_cost(
    timed_in: Callable[[list[str]], tuple[Timed, Callable[[], None]]],
    check: list[str],
    units: list[str],
    runs: int,
    bare_ms: float,
) -> tuple[list[str], list[str]]:
    """Rows for the kube-sized node. TIMED_IN(prefix) gives a timer whose children run
    behind PREFIX (nsenter into the node) and its closer; CHECK is `check --registry DIR`;
    UNITS, units of the registry (each claim free, outside the node-port range)."""
    node = KubeNode()
    timed, close = timed_in(node.prefix)
    results: dict[str, list[float]] = {}

    def sample(label: str, argv: Sequence[str], before: Callable[[], None] | None = None,
               count: int = runs) -> None:  # fmt: skip
        for _ in range(count):
            if before is not None:
                before()
            wall, _, code = timed(list(argv))
            if code != 0:
                raise SystemExit(f"bench: {' '.join(argv)} exited {code}")
            results.setdefault(label, []).append(wall)

    try:
        sample("`python3 -I -c pass`", ["/usr/bin/python3", "-I", "-c", "pass"])
        few = max(5, runs // 4)
        sample("`iptables-save`", ["/usr/sbin/iptables-save"], count=few)
        sample("`nft list ruleset`", ["/usr/sbin/nft", "list", "ruleset"], count=few)
        sample("check, first after a change (reads and judges the ruleset)",
               [*check, units[0]], before=node.touch, count=few)  # fmt: skip
        sample("check, the same unit again (its mark)", [*check, units[0]])
        # Other units at the same generation: the mark of the ports no rule names.
        for unit in units[1 : 1 + runs]:
            sample("check, another unit at the same generation (the ports' mark)",
                   [*check, unit], count=1)  # fmt: skip
    finally:
        close()
        node.close()
    rows = [
        f"| kube-proxy-sized node: {SERVICES:,} services, {NODEPORTS:,} NodePorts, "
        f"{node.rules:,} rules | runs | median ms | min ms | "
        "x bare |",
        "|---|---:|---:|---:|---:|",
    ]
    bare = statistics.median(results["`python3 -I -c pass`"])
    for label, walls in results.items():
        median = statistics.median(walls)
        rows.append(f"| {label} | {len(walls)} | {median:.1f} | {min(walls):.1f} | "
                    f"{median / bare:.2f} |")  # fmt: skip
    notes = [
        "kube-proxy-sized node: a network namespace of its own, iptables-nft rules in "
        "kube-proxy's shapes loaded with iptables-restore; each 'first after a change' run "
        "follows an `nft add table` + `nft delete table` (the generation moves)",
        f"bare interpreter outside that namespace: {bare_ms:.1f} ms",
    ]
    return rows, notes

"""portguard's NAT judgement against the kernel, case by random nftables ruleset, in network
namespaces of their own (DESIGN rule 5; issue 26).

Run as root inside fresh network and mount namespaces (tests/kernel/test_nat_differential.py
starts it with `unshare --net --mount`): this one is the host, with 192.0.2.10 and
198.51.100.10 on pg0; a client namespace behind pg1 has 192.0.2.20 and 198.51.100.20; a pod
namespace at 10.244.1.5 greets "pod" on port 80; this host greets "other" on 9000. For each
seeded case a random table of NAT rules (hooks, port, set or range, destination address or
address type, source, interface and mark qualifiers, jumps, accept/return) is loaded with
nft, portguard judges the claim 8080/tcp on every address (in-process; through the real
`portguard check` every CLI_EVERY-th case), and then the registered service ("service")
listens and the client connects from both its addresses to both of this host's: four real
connections.

A disagreement is `redirected` when a connection reached the service, or free when every
connection went elsewhere. `partly-redirected` is never wrong (it starts the service), and is
counted: when all four went elsewhere it was imprecise, not unsafe.
"""

import argparse
import contextlib
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from portguard.commands import redirects
from portguard.registry.claims import Claim, Proto

PORT, OTHER, POD = 8080, 9000, "10.244.1.5"
HOSTS = ("192.0.2.10", "198.51.100.10")
CLIENTS = ("192.0.2.20", "198.51.100.20")
CLI_EVERY = 10
UNIT = "diff.service"
GREETER = (
    "import socket, sys; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); "
    "[(c.sendall(sys.argv[3].encode()), c.recv(1), c.close()) for c, _ in iter(s.accept, None)]"
)
CONNECT = (
    "import socket, sys\n"
    "for source in sys.argv[3:]:\n"
    " try:\n"
    "  c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2,"
    " source_address=(source, 0))\n"
    "  print(c.recv(100).decode() or 'nothing'); c.close()\n"
    " except OSError as e:\n"
    "  print(type(e).__name__)\n"
)


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True, timeout=30)


class Namespace:
    """A network namespace held by a sleeping child: nothing under /run/netns, nothing left."""

    def __init__(self) -> None:
        self.child = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
        time.sleep(0.05)
        self.path = f"/proc/{self.child.pid}/ns/net"

    def run(self, command: str) -> None:
        sh(f"nsenter --net={self.path} {command}")

    def close(self) -> None:
        self.child.kill()
        self.child.wait()


def set_up() -> tuple[Namespace, Namespace, list[subprocess.Popen[bytes]]]:
    # `check` keeps its compiled registry and its NAT marks in /run/portguard: a /run of this
    # mount namespace's own (unshare --mount), never the host's.
    sh("mount -t tmpfs -o mode=0755 tmpfs /run")
    client, pod = Namespace(), Namespace()
    sh("ip link set lo up")
    sh(f"ip link add pg0 type veth peer name pg1 && ip link set pg1 netns {client.child.pid}")
    sh(f"ip addr add {HOSTS[0]}/24 dev pg0 && ip addr add {HOSTS[1]}/24 dev pg0")
    sh("ip link set pg0 up")
    for address in CLIENTS:
        client.run(f"ip addr add {address}/24 dev pg1")
    client.run("ip link set pg1 up")
    client.run("ip link set lo up")
    sh(f"ip link add pg2 type veth peer name pg3 && ip link set pg3 netns {pod.child.pid}")
    sh("ip addr add 10.244.1.1/24 dev pg2 && ip link set pg2 up")
    pod.run(f"ip addr add {POD}/24 dev pg3")
    pod.run("ip link set pg3 up")
    pod.run("ip route add default via 10.244.1.1")
    sh("sysctl -qw net.ipv4.ip_forward=1")
    greeters = [
        subprocess.Popen(
            ["nsenter", f"--net={pod.path}", sys.executable, "-c", GREETER, POD, "80", "pod"]
        ),
        subprocess.Popen([sys.executable, "-c", GREETER, "0.0.0.0", str(OTHER), "other"]),
    ]
    time.sleep(0.3)
    return client, pod, greeters


def random_rule(rng: random.Random, chains: list[str]) -> str:
    """One rule: some matches, then a verdict; every part is one the kernel applies."""
    parts: list[str] = []
    port = rng.choice([
        f"tcp dport {PORT}", f"tcp dport {{ {PORT}, {PORT + 1} }}",
        f"tcp dport {PORT - 5}-{PORT + 5}", f"meta l4proto tcp th dport {PORT}",
        f"tcp dport {PORT + 1}", f"tcp dport != {PORT + 1}",
        "meta l4proto tcp",  # every port (a mapping to a port needs a transport protocol)
    ])  # fmt: skip
    parts.append(port)
    parts.append(rng.choice(["", "", f"ip daddr {HOSTS[0]}", "ip daddr 192.0.2.0/24",
                             "fib daddr type local", "ip daddr 203.0.113.1",
                             f"ip daddr {{ {HOSTS[0]}, {HOSTS[1]} }}"]))  # fmt: skip
    parts.append(rng.choice(["", "", "", f"ip saddr {CLIENTS[0]}", "ip saddr 203.0.113.0/24",
                             "ip saddr != 10.0.0.0/8", 'iifname "pg0"', 'iifname != "lo"',
                             "meta mark 0x1", "numgen random mod 2 0"]))  # fmt: skip
    verdicts = [f"dnat to {POD}:80", f"redirect to :{OTHER}", f"redirect to :{PORT}", "accept",
                "return", f"dnat to {HOSTS[0]}:{OTHER}", "counter"]  # fmt: skip
    verdicts += [f"jump {c}" for c in chains] + [f"goto {c}" for c in chains]
    parts.append(rng.choice(verdicts))
    return " ".join(p for p in parts if p)


def random_table(rng: random.Random) -> str:
    sub = ["c1"] if rng.random() < 0.5 else []
    lines = ["table ip pgdiff {", "  chain pre {",
             "    type nat hook prerouting priority -100; policy accept;"]  # fmt: skip
    lines += [f"    {random_rule(rng, sub)}" for _ in range(rng.randint(1, 3))]
    lines.append("  }")
    for name in sub:
        lines.append(f"  chain {name} {{")
        lines += [f"    {random_rule(rng, [])}" for _ in range(rng.randint(1, 2))]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def landings(client: Namespace) -> list[str]:
    """Where each of the four connections lands, with the service listening on 8080."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", PORT))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"service")
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                conn.recv(1)  # the client closes first: no TIME-WAIT stays on 8080
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        out: list[str] = []
        for host in HOSTS:
            command = ["nsenter", f"--net={client.path}", sys.executable, "-c", CONNECT, host,
                       str(PORT), *CLIENTS]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
            out += done.stdout.split()
        return out
    finally:
        stop.set()
        thread.join()
        server.close()


def verdict_in_process() -> str:
    judged = redirects.look([Claim(Proto.TCP, PORT, PORT)], unit=UNIT,
                            own={(Proto.TCP, PORT)})  # fmt: skip
    if judged.taken:
        return "redirected"
    return "partly-redirected" if judged.partly else "free"


def verdict_cli(registry: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "portguard", "check", UNIT, "--registry",
                           str(registry), "--json"], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    return str(json.loads(done.stdout)["verdict"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    client, pod, greeters = set_up()
    registry = Path(tempfile.mkdtemp(prefix="pgnat-"))
    (registry / "registry.yaml").write_text(
        f"version: 1\nunits:\n  {UNIT}:\n    listen: [{PORT}]\n"
    )
    counts: Counter[str] = Counter()
    disagreements: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for case in range(args.cases):
            table = random_table(rng)
            sh("nft flush ruleset")
            subprocess.run(["nft", "-f", "-"], input=table, text=True, check=True, timeout=30)
            verdict = verdict_cli(registry) if case % CLI_EVERY == 0 else verdict_in_process()
            landed = landings(client)
            reached = landed.count("service")
            counts[f"{verdict}, {reached} of 4 reached the service"] += 1
            counts["through the real check" if case % CLI_EVERY == 0 else "in-process"] += 1
            # Free while a connection went elsewhere is a redirect missed: counted apart.
            if verdict == "free" and reached < len(landed):
                counts["free, yet a connection went elsewhere (missed)"] += 1
            wrong = (verdict == "redirected" and reached) or (verdict == "free" and not reached)
            if wrong:
                disagreements.append({"case": case, "verdict": verdict, "landed": landed,
                                      "ruleset": table})  # fmt: skip
    finally:
        sh("nft flush ruleset")
        for greeter in greeters:
            greeter.kill()
        client.close()
        pod.close()
    report = {"seed": args.seed, "cases": args.cases, "counts": dict(sorted(counts.items())),
              "disagreements": disagreements,
              "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

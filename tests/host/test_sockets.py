"""The kernel's socket table (sockets.py), asked about sockets a child process makes.

As root the child runs in a fresh network namespace, where its sockets are the only ones;
otherwise in this one, and only its ports are looked at.
"""

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import SRC

pytest.importorskip("pyroute2")

# Makes sockets on ports the kernel picks, then prints what sockets.py sees of them.
SCRIPT = """
import json, os, socket
from portguard.registry.claims import Proto
from portguard.host.sockets import census, listeners

def tcp6(v6only):
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    sock.bind(("::", 0))
    sock.listen()
    return sock

tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen()
v6only, dual = tcp6(1), tcp6(0)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 0))
client = socket.create_connection(tcp.getsockname())
accepted, _ = tcp.accept()
connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
connected.bind(("127.0.0.1", 0))
connected.connect(("127.0.0.1", udp.getsockname()[1]))

mine = {"tcp": tcp, "v6only": v6only, "dual": dual, "udp": udp, "client": client,
        "accepted": accepted, "connected": connected}
def seen(found):
    return [[str(o.proto), o.state, str(o.address), o.port, o.v6only, o.inode, o.cgroup_id,
             o.peer and [str(o.peer[0]), o.peer[1]]] for o in found]
port = {name: sock.getsockname()[1] for name, sock in mine.items()}
own = open("/proc/self/cgroup").read().rpartition("::")[2].strip()  # cgroup v2
print(json.dumps({
    "port": port,
    "cgroup_id": os.stat("/sys/fs/cgroup" + own.rstrip("/")).st_ino,
    "inode": {name: os.fstat(sock.fileno()).st_ino for name, sock in mine.items()},
    "uids": sorted({o.uid for o in listeners()}),
    "listeners": seen(listeners()),
    "census_tcp": seen(census([(Proto.TCP, port["tcp"])])),
    "census_udp": seen(census([(Proto.UDP, port["udp"])])),
    "census_connected": seen(census([(Proto.UDP, port["connected"])])),
    "census_none": seen(census([(Proto.UDP, port["tcp"])])),
}))
"""

ISOLATED = os.geteuid() == 0


@pytest.fixture(scope="module")
def seen() -> dict[str, Any]:
    command = [sys.executable, "-c", SCRIPT]
    if ISOLATED:
        # `unshare --net` leaves lo down; an established connection needs it up.
        command = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        command += [sys.executable, "-c", SCRIPT]
    result = subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def row(
    seen: dict[str, Any], name: str, state: str, address: str, v6only: bool = False
) -> list[Any]:
    """The row SCRIPT prints for its socket NAME, without a peer."""
    proto = "udp" if name in ("udp", "connected") else "tcp"
    port, inode = seen["port"][name], seen["inode"][name]
    return [proto, state, address, port, v6only, inode, seen["cgroup_id"], None]


def test_listeners_are_the_listening_and_unconnected_sockets(seen: dict[str, Any]) -> None:
    ours = {(r[0], r[3]) for r in (row(seen, name, "", "") for name in seen["port"])}
    found = [r for r in seen["listeners"] if ISOLATED or (r[0], r[3]) in ours]
    assert sorted(found) == sorted(
        [
            row(seen, "tcp", "LISTEN", "127.0.0.1"),
            row(seen, "v6only", "LISTEN", "::", v6only=True),
            row(seen, "dual", "LISTEN", "::"),
            row(seen, "udp", "UNCONN", "0.0.0.0"),
        ]
    )


def test_listeners_report_the_owner_uid(seen: dict[str, Any]) -> None:
    if not ISOLATED:
        pytest.skip("other users' sockets are in this namespace")
    assert seen["uids"] == [os.geteuid()]


def test_census_of_a_tcp_port_has_its_listener_and_connections(seen: dict[str, Any]) -> None:
    accepted = row(seen, "accepted", "ESTAB", "127.0.0.1")
    accepted[3] = seen["port"]["tcp"]  # an accepted connection has its listener's port
    accepted[-1] = ["127.0.0.1", seen["port"]["client"]]
    assert sorted(seen["census_tcp"]) == sorted([row(seen, "tcp", "LISTEN", "127.0.0.1"), accepted])


def test_census_of_a_udp_port(seen: dict[str, Any]) -> None:
    # The connected socket sends to this port but is bound to another: not counted here.
    assert seen["census_udp"] == [row(seen, "udp", "UNCONN", "0.0.0.0")]
    connected = row(seen, "connected", "ESTAB", "127.0.0.1")
    connected[-1] = ["127.0.0.1", seen["port"]["udp"]]
    assert seen["census_connected"] == [connected]


def test_census_keeps_protocols_apart(seen: dict[str, Any]) -> None:
    # Nothing is bound to the TCP listener's port number over UDP (unless by chance).
    udp_ports = {seen["port"]["udp"], seen["port"]["connected"]}
    if seen["port"]["tcp"] in udp_ports:
        pytest.skip("the kernel picked the same number for a UDP and a TCP port")
    assert seen["census_none"] == []

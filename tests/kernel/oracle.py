"""The kernel as the oracle: builds foreign sockets and tries a service's own bind() and
listen(), in whatever network namespace it is started in.

Deliberately independent of portguard: stdlib only, its own socket code, run as a separate
process (so the sockets it holds belong to someone other than the checker). It reads one
JSON request per line on stdin and answers one JSON line on stdout:

  {"op": "live", "port": P, "sockets": [SPEC, ...]}      -> {"made": [true|errno, ...]}
  {"op": "timewait", "port": P, "sockets": [SPEC, ...]}  -> {"made": [true|errno, ...]}
  {"op": "service", "port": P, "claim": CLAIM}           -> {"errno": 0 | errno}
  {"op": "hold", "port": P, "claim": CLAIM}              -> the same, and the service stays
  {"op": "pool", "first": F, "last": L, "claim": CLAIM}  -> {"bound": [N, ...]}
  {"op": "clear"}                                        -> {}

`pool` is a service drawing ports from F-L as it needs them: on each of its claim's
sockets' addresses (one per family for a bare claim), it binds (and listens on, for TCP) every
port it can, holding them all at once, and says how many it got per address; then lets go.

SPEC: {"proto", "kind", "address", "v6only", "reuseaddr", "reuseport", "uid", "dest"}, kind
one of bound, listen, accepted, outbound, connected (live) or timewait-server,
timewait-client (timewait). CLAIM: {"proto", "address" (None: 0.0.0.0 and [::] v6only),
"v6only", "reuseaddr", "reuseport", "freebind", "uid"}.
"""

import errno
import json
import os
import select
import socket
import sys
import time

PEER_PORT = 9  # a dual-stack listener every outbound connection goes to
IP_FREEBIND = 15
RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
FIN_WAIT_2 = "05"  # states as /proc/net/tcp writes them
TIME_WAIT = "06"


class Oracle:
    def __init__(self) -> None:
        self.held: list[socket.socket] = []
        self.peer = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.peer.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.peer.bind(("::", PEER_PORT))
        self.peer.listen(4096)
        self.peer.setblocking(False)
        with open(RANGE) as handle:
            self.ephemeral = handle.read().split()

    # --- requests ---------------------------------------------------------------------------

    def live(self, port: int, specs: list[dict]) -> list[object]:
        return [self._make(port, spec) for spec in specs]

    def timewait(self, port: int, specs: list[dict]) -> list[object]:
        return [self._make(port, spec) for spec in specs]

    def service(self, port: int, claim: dict, hold: bool = False) -> int:
        """The service's bind(), and listen() for TCP, on every socket of its claim at once;
        HOLD keeps them (a service that started) until the next clear."""
        binds = _addresses(claim)
        sockets: list[socket.socket] = []
        try:
            with identity(claim["uid"]):
                for host, v6only in binds:
                    sock = new_socket(claim["proto"], host, v6only, claim["reuseaddr"],
                                      claim["reuseport"])  # fmt: skip
                    sockets.append(sock)
                    if claim["freebind"]:
                        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                    sock.bind((host, port))
                    if claim["proto"] == "tcp":
                        sock.listen(16)
            return 0
        except OSError as exc:
            hold = False
            return exc.errno or -1
        finally:
            for sock in sockets:
                self.held.append(sock) if hold else sock.close()

    def pool(self, first: int, last: int, claim: dict) -> list[int]:
        bound = []
        for host, v6only in _addresses(claim):
            taken: list[socket.socket] = []
            try:
                with identity(claim["uid"]):
                    for port in range(first, last + 1):
                        sock = new_socket(claim["proto"], host, v6only, claim["reuseaddr"],
                                          claim["reuseport"])  # fmt: skip
                        try:
                            sock.bind((host, port))
                            if claim["proto"] == "tcp":
                                sock.listen(16)
                        except OSError:
                            sock.close()
                            continue
                        taken.append(sock)
                bound.append(len(taken))
            finally:
                for sock in taken:
                    sock.close()
        return bound

    def clear(self) -> None:
        for sock in self.held:
            sock.close()
        self.held = []
        self._drain_peer(None)

    # --- the foreign sockets ------------------------------------------------------------------

    def _make(self, port: int, spec: dict) -> object:
        try:
            with identity(spec["uid"]):
                made = getattr(self, "_" + spec["kind"].replace("-", "_"))(port, spec)
        except OSError as exc:
            return exc.errno or -1
        self.held.extend(made)
        return True

    def _socket(self, spec: dict) -> socket.socket:
        return new_socket(spec["proto"], spec["address"], spec["v6only"], spec["reuseaddr"],
                          spec["reuseport"])  # fmt: skip

    def _bound(self, port: int, spec: dict) -> list[socket.socket]:
        sock = self._socket(spec)
        with closing_on_error(sock):
            sock.bind((spec["address"], port))
        return [sock]

    def _listen(self, port: int, spec: dict) -> list[socket.socket]:
        [sock] = self._bound(port, spec)
        with closing_on_error(sock):
            sock.listen(16)
        return [sock]

    def _connected(self, port: int, spec: dict) -> list[socket.socket]:
        """A connected UDP socket on PORT."""
        [sock] = self._bound(port, spec)
        dest = spec["dest"]
        if sock.family == socket.AF_INET6 and ":" not in dest:
            dest = "::ffff:" + dest  # an IPv4 peer, as a dual-stack socket names it
        with closing_on_error(sock):
            sock.connect((dest, PEER_PORT))
        return [sock]

    def _accept_one(self, port: int, spec: dict) -> tuple[socket.socket, socket.socket]:
        """A connection accepted on PORT, its listener closed: (server side, client side)."""
        [listener] = self._listen(port, spec)
        # A listener of the same SO_REUSEPORT group may take the connection instead.
        listener.settimeout(0.5)
        try:
            client = socket.socket(family_of(spec["dest"]), socket.SOCK_STREAM)
            with closing_on_error(client):
                client.connect((spec["dest"], port))
                server, _ = listener.accept()
                server.setblocking(True)
        finally:
            listener.close()
        return server, client

    def _accepted(self, port: int, spec: dict) -> list[socket.socket]:
        return list(self._accept_one(port, spec))

    def _timewait_server(self, port: int, spec: dict) -> list[socket.socket]:
        """The service's side closes first, so PORT's end of the connection is in TIME-WAIT."""
        server, client = self._accept_one(port, spec)
        client_port = client.getsockname()[1]
        server.close()
        wait_until(lambda: tcp_state(port, client_port) == FIN_WAIT_2)
        client.close()
        wait_until(lambda: tcp_state(port, client_port) == TIME_WAIT)
        return []

    def _outbound(self, port: int, spec: dict) -> list[socket.socket]:
        """A client connection that the kernel gave PORT as its source port."""
        client = self._socket(spec)
        with closing_on_error(client), ephemeral_range(port):
            client.connect((spec["dest"], PEER_PORT))
        return [client]

    def _timewait_client(self, port: int, spec: dict) -> list[socket.socket]:
        [client] = self._outbound(port, spec)
        client.close()
        wait_until(lambda: tcp_state(port, PEER_PORT) == FIN_WAIT_2)
        self._drain_peer(port)
        wait_until(lambda: tcp_state(port, PEER_PORT) == TIME_WAIT)
        return []

    def _drain_peer(self, port: int | None) -> None:
        """Accept what waits at the peer; close the end of the connection from PORT (all: None)."""
        while select.select([self.peer], [], [], 0)[0]:
            try:
                conn, address = self.peer.accept()
            except BlockingIOError:
                break
            if port is None or address[1] == port:
                conn.close()
            else:
                self.held.append(conn)
        if port is not None:
            for sock in list(self.held):
                if _peer_port(sock) == port and _local_port(sock) == PEER_PORT:
                    self.held.remove(sock)
                    sock.close()


def _addresses(claim: dict) -> list[tuple[str, bool]]:
    """Where a service binds its claim: (address, IPV6_V6ONLY) of each of its sockets."""
    if claim["address"] is None:
        return [("0.0.0.0", False), ("::", True)]
    return [(claim["address"], claim["v6only"])]


def _peer_port(sock: socket.socket) -> int | None:
    try:
        return int(sock.getpeername()[1])
    except OSError:
        return None


def _local_port(sock: socket.socket) -> int | None:
    try:
        return int(sock.getsockname()[1])
    except OSError:
        return None


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def new_socket(
    proto: str, host: str, v6only: bool, reuseaddr: bool, reuseport: bool
) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family_of(host), kind)
    if reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    return sock


class identity:
    """Creates and binds as UID (the socket keeps its creator's uid); root again after."""

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def __enter__(self) -> None:
        if self.uid:
            os.seteuid(self.uid)

    def __exit__(self, *exc: object) -> None:
        if self.uid:
            os.seteuid(0)


class closing_on_error:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None:
            self.sock.close()


class ephemeral_range:
    """net.ipv4.ip_local_port_range is PORT alone while a client connects (this namespace's)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> None:
        write_range(f"{self.port} {self.port}")

    def __exit__(self, *exc: object) -> None:
        write_range(ORIGINAL_RANGE)


def write_range(text: str) -> None:
    # The range is per network namespace, and only root may set it.
    euid = os.geteuid()
    if euid:
        os.seteuid(0)
    try:
        with open(RANGE, "w") as handle:
            handle.write(text)
    finally:
        if euid:
            os.seteuid(euid)


def tcp_state(port: int, peer_port: int) -> str | None:
    """The state of the TCP connection from local PORT to PEER_PORT."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                if int(local.rsplit(":", 1)[1], 16) != port:
                    continue
                if int(remote.rsplit(":", 1)[1], 16) == peer_port:
                    return state
    return None


def wait_until(ready, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, "the connection did not reach its state")
        time.sleep(0.0005)


with open(RANGE) as _handle:
    ORIGINAL_RANGE = _handle.read().strip()


def main() -> None:
    oracle = Oracle()
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op in ("live", "timewait"):
            answer: dict = {"made": getattr(oracle, op)(request["port"], request["sockets"])}
        elif op in ("service", "hold"):
            answer = {"errno": oracle.service(request["port"], request["claim"], op == "hold")}
        elif op == "pool":
            answer = {"bound": oracle.pool(request["first"], request["last"], request["claim"])}
        elif op == "clear":
            oracle.clear()
            answer = {}
        else:
            answer = {"error": f"unknown op {op}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

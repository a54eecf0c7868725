"""Which container publishes a port, from the Docker engine's API on its unix socket.

A published port is held by docker-proxy (or dockerd itself without the userland proxy)
in docker.service's cgroup; only the engine knows which container it is for.
"""

import itertools
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DOCKER_SOCKET = "/run/docker.sock"


@dataclass(frozen=True, slots=True)
class Container:
    """A container as its runtime names it."""

    id: str
    name: str | None
    image: str | None


def containers(*, timeout: float, path: str = DOCKER_SOCKET) -> list[dict[str, Any]]:
    """The engine's running containers (GET /containers/json); raises OSError when it cannot."""
    # http.client (and the email package under it) loads only when the engine is asked.
    import http.client  # noqa: PLC0415

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(path)
            self.sock = sock

    connection = UnixConnection("localhost", timeout=timeout)
    try:
        connection.request("GET", "/containers/json")
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"docker API answered {response.status} {response.reason}")
        data = json.loads(response.read())
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(f"docker API: {exc}") from exc
    finally:
        connection.close()
    return data if isinstance(data, list) else []


_ANY = ("", "0.0.0.0", "::")


def publishing(
    port: int, proto: str, listing: list[dict[str, Any]], address: str | None = None
) -> Container | None:
    """The container that publishes PORT/PROTO on ADDRESS (or any), from `containers()`."""
    for item in listing:
        for published in item.get("Ports") or []:
            if published.get("PublicPort") != port or published.get("Type") != proto:
                continue
            host_ip = str(published.get("IP", ""))
            if address is None or host_ip in _ANY or host_ip == address:
                return from_listing(item)
    return None


def by_id(container_id: str, listing: list[dict[str, Any]]) -> Container | None:
    for item in listing:
        if str(item.get("Id", "")).startswith(container_id):
            return from_listing(item)
    return None


def from_listing(item: dict[str, Any]) -> Container:
    names = item.get("Names") or []
    name = names[0].lstrip("/") if names else None
    return Container(str(item.get("Id", "")), name, item.get("Image"))


def proxy_target(cmdline: Sequence[str]) -> str | None:
    """Where docker-proxy forwards to (`172.17.0.2:80`), from its own arguments.

    This names the container's address even when the engine's API cannot be asked.
    """
    args = {flag.lstrip("-"): value for flag, value in itertools.pairwise(cmdline)}
    address, port = args.get("container-ip"), args.get("container-port")
    if not address or not port:
        return None
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def proxy_for(
    port: int, proto: str, argvs: Iterable[tuple[int, Sequence[str]]]
) -> tuple[int, str] | None:
    """The docker-proxy among ARGVS ((pid, command line) each) that publishes PORT/PROTO, and
    where it forwards to: command lines need no access to the engine's API (an unprivileged
    guard)."""
    for pid, argv in argvs:
        if not argv or not argv[0].endswith("docker-proxy"):
            continue
        args = {flag.lstrip("-"): value for flag, value in itertools.pairwise(argv)}
        target = proxy_target(argv)
        if args.get("host-port") == str(port) and args.get("proto", "tcp") == proto and target:
            return pid, target
    return None

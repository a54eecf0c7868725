"""The kernel's socket table (sock_diag), filtered in the kernel by port. The only pyroute2 import.

Works with pyroute2 0.7 (Debian 12), whose message class knows neither the cgroup id
attribute nor a port filter, and with 0.9 (current PyPI): we bring our own message
and request classes instead of relying on either's `get_sock_stats`.
"""

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.diag import (
    SOCK_DIAG_BY_FAMILY,
    DiagSocket,
    MarshalDiag,
    inet_diag_msg,
    inet_diag_req,
)

from portguard.host.occupants import STATE_NAMES, TCP_TIME_WAIT, Occupant
from portguard.registry.claims import Proto

# Numbers from linux/inet_diag.h and linux/tcp_states.h.
INET_DIAG_CGROUP_ID = 21
_ALL_STATES = 0xFFFFFFFF
_TCP_LISTEN = 10
_TCP_CLOSE = 7  # an unconnected UDP socket: ss's UNCONN


class _diag_msg(inet_diag_msg):  # type: ignore[misc]
    """inet_diag_msg whose attribute map reaches INET_DIAG_CGROUP_ID (21) on every version."""

    nla_map = (
        *inet_diag_msg.nla_map[:19],
        ("INET_DIAG_ULP_INFO", "hex"),
        ("INET_DIAG_SK_BPF_STORAGES", "hex"),
        ("INET_DIAG_CGROUP_ID", "uint64"),
    )


class _Marshal(MarshalDiag):  # type: ignore[misc]
    msg_map = {socket.AF_INET: _diag_msg, socket.AF_INET6: _diag_msg}  # noqa: RUF012


class _Diag(DiagSocket):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        if hasattr(self, "set_marshal"):
            self.set_marshal(_Marshal())
        else:
            self.marshal = _Marshal()


def census(ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
    """Every TCP/UDP, IPv4/IPv6 socket bound to one of PORTS, in this network namespace."""
    found: list[Occupant] = []
    with _Diag() as diag:
        diag.bind()
        for proto, port in sorted(set(ports)):
            for family in (socket.AF_INET, socket.AF_INET6):
                found.extend(_dump(diag, family, proto, port=port, states=_ALL_STATES))
    return found


def listeners() -> list[Occupant]:
    """Every listening TCP and bound, unconnected UDP socket in this network namespace."""
    found: list[Occupant] = []
    with _Diag() as diag:
        diag.bind()
        for proto, state in ((Proto.TCP, _TCP_LISTEN), (Proto.UDP, _TCP_CLOSE)):
            for family in (socket.AF_INET, socket.AF_INET6):
                # The kernel filters by state, so established connections are never sent.
                found.extend(_dump(diag, family, proto, port=0, states=1 << state))
    return found


def _dump(diag: _Diag, family: int, proto: Proto, *, port: int, states: int) -> Iterator[Occupant]:
    request = inet_diag_req()
    request["sdiag_family"] = family
    request["sdiag_protocol"] = socket.IPPROTO_TCP if proto is Proto.TCP else socket.IPPROTO_UDP
    request["idiag_states"] = states
    # The kernel compares idiag_sport with each socket's local port (0: every port):
    # filtered in the kernel, as ss's filters are, so 20,000 unrelated sockets cost nothing.
    request["idiag_sport"] = port
    for message in diag.nlm_request(request, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP):
        occupant = _occupant(message, proto)
        if occupant is not None and port in (0, occupant.port):
            yield occupant


def _occupant(message: Any, proto: Proto) -> Occupant | None:
    if message.get("header", {}).get("type") != SOCK_DIAG_BY_FAMILY:
        return None
    state = message["idiag_state"]
    time_wait = state == TCP_TIME_WAIT
    peer = None
    dport = message["idiag_dport"]
    if dport:
        peer = (ipaddress.ip_address(message["idiag_dst"]), dport)
    cgroup_id = message.get_attr("INET_DIAG_CGROUP_ID")
    return Occupant(
        proto=proto,
        state=STATE_NAMES.get(state, str(state)),
        address=ipaddress.ip_address(message["idiag_src"]),
        port=message["idiag_sport"],
        peer=peer,
        inode=message["idiag_inode"],
        uid=message["idiag_uid"],
        cgroup_id=None if time_wait or not cgroup_id else int(cgroup_id),
        v6only=bool(message.get_attr("INET_DIAG_SKV6ONLY")),
        expires_ms=message["idiag_expires"] if time_wait else None,
    )

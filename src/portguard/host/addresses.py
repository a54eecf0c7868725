"""This host's addresses and interfaces, from rtnetlink (RTM_GETADDR), with the stdlib alone."""

import _socket
import struct
from dataclasses import dataclass

from portguard.host.nftables import iter_attrs

_NETLINK_ROUTE = 0
_RTM_GETADDR = 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
# Scopes (linux/rtnetlink.h): universe 0, site 200, link 253, host 254.
_REMOTE_SCOPES = (0, 200)


@dataclass(frozen=True, slots=True)
class Address:
    family: int  # AF_INET or AF_INET6
    packed: bytes
    scope: int
    interface: int

    @property
    def remote(self) -> bool:
        """Reachable from another host: global or site scope (not loopback or link-local)."""
        return self.scope in _REMOTE_SCOPES


def addresses() -> list[Address]:
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _NETLINK_ROUTE)
    try:
        sock.settimeout(2.0)
        body = struct.pack("=BBBBI", _socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETADDR,
                              _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body)  # fmt: skip
        found: list[Address] = []
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                payload = data[offset + 16 : offset + length]
                offset += (length + 3) & ~3
                if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                    return found
                family, _prefix, _flags, scope, index = struct.unpack_from("=BBBBI", payload)
                attrs = dict(iter_attrs(payload[8:]))
                packed = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
                if packed:
                    found.append(Address(family, packed, scope, index))
    finally:
        sock.close()


def interfaces() -> tuple[tuple[int, str], ...]:
    """(index, name) of every interface present now."""
    return tuple(_socket.if_nameindex())

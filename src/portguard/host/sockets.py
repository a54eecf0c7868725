"""The kernel's socket table (sock_diag), filtered in the kernel by port. The only pyroute2 import.

Works with pyroute2 0.7 (Debian 12), whose message class knows neither the cgroup id
attribute nor a port filter, and with 0.9 (current PyPI): we bring our own message
and request classes instead of relying on either's `get_sock_stats`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from portguard.packages import without_init

# The netlink core alone: pyroute2's __init__ imports IPRoute, NDB and asyncio too.
without_init("pyroute2")

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST  # noqa: E402
from pyroute2.netlink.diag import (  # noqa: E402
    SOCK_DIAG_BY_FAMILY,
    DiagSocket,
    MarshalDiag,
    inet_diag_msg,
    inet_diag_req,
)

if TYPE_CHECKING:
    # Not at run time: the early census child (prefetch.py) sends its rows as they are, and
    # loads none of the dataclasses and enums an Occupant needs (its answer is on a held
    # check's critical path).
    from portguard.host.occupants import Occupant, Row

# Numbers from linux/inet_diag.h and linux/tcp_states.h.
INET_DIAG_CGROUP_ID = 21
_ALL_STATES = 0xFFFFFFFF
_TCP_TIME_WAIT = 6
_TCP_LISTEN = 10
_TCP_CLOSE = 7  # an unconnected UDP socket: ss's UNCONN
_BOUND_STATES = (1 << _TCP_LISTEN) | (1 << _TCP_CLOSE)
_TIME_WAIT = 1 << _TCP_TIME_WAIT
_BC_JMP, _BC_S_GE, _BC_S_LE = 1, 2, 3  # bytecode: jump; source port >= / <= next op's `no`
_RANGE_BYTES = 20
# A bytecode op's longest jump is 65,535 bytes, 20 bytes per port range: this many ranges fit
# one filter; more are sent in further dumps.
_RANGES_PER_DUMP = 3000


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


class _diag_req(inet_diag_req):  # type: ignore[misc]
    """inet_diag_req that can carry a bytecode filter (INET_DIAG_REQ_BYTECODE, 1)."""

    nla_map = (("INET_DIAG_REQ_NONE", "none"), ("INET_DIAG_REQ_BYTECODE", "cdata"))


class _Diag(DiagSocket):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        if hasattr(self, "set_marshal"):
            self.set_marshal(_Marshal())
        else:
            self.marshal = _Marshal()


def census(ports: Iterable[tuple[str, int]]) -> list[Occupant]:
    """Every TCP/UDP, IPv4/IPv6 socket bound to one of PORTS (("tcp" or "udp", port); a Proto
    is one), in this network namespace.

    One dump per family and protocol, whatever the number of ports: the kernel runs a
    bytecode filter of port ranges over its tables (as ss's filters do), so neither 20,000
    unrelated connections nor a claim of 50,000 ports costs a dump each.
    """
    return occupants(rows(ports))


def listening_census(ports: Iterable[tuple[str, int]]) -> list[Occupant]:
    """The listeners on PORTS (TCP), and every UDP socket on them: the usual holder of a busy
    port, read without walking the table of connections (states filtered in the kernel: 47,000
    ESTABLISHED and TIME-WAIT sockets on a busy host are never visited). A UDP dump walks all
    UDP sockets whatever the states, so UDP gets them all."""
    return occupants(rows(ports, listening=True))


def rows(ports: Iterable[tuple[str, int]], *, listening: bool = False) -> list[Row]:
    """`census` (with LISTENING, `listening_census`) as plain rows."""
    tcp = 1 << _TCP_LISTEN if listening else _ALL_STATES
    return _census(_by_proto(ports), {"tcp": tcp, "udp": _ALL_STATES})


def holders_census(ports: Iterable[tuple[str, int]]) -> list[Occupant]:
    """Who holds PORTS, as `audit` asks: every listener and bound socket on them; and on the
    ports none of those hold, every other socket but TIME-WAIT (a client connection that was
    given the port). A listener's accepted connections, tens of thousands on a busy host,
    say nothing more of who holds its port, and TIME-WAIT names no one."""
    wanted = _by_proto(ports)
    found = _census(wanted, {"tcp": _BOUND_STATES, "udp": _ALL_STATES})
    held = {(row[0], row[3]) for row in found}
    rest = {"tcp": {port for port in wanted.get("tcp", ()) if ("tcp", port) not in held}}
    others = _census(rest, {"tcp": _ALL_STATES & ~_BOUND_STATES & ~_TIME_WAIT})
    return occupants(found + others)


def _by_proto(ports: Iterable[tuple[str, int]]) -> dict[str, set[int]]:
    wanted: dict[str, set[int]] = {}
    for proto, port in ports:
        wanted.setdefault(str(proto), set()).add(port)
    return wanted


def _census(wanted: dict[str, set[int]], states: dict[str, int]) -> list[Row]:
    found: list[Row] = []
    if not any(wanted.values()):
        return found
    with _Diag() as diag:
        diag.bind()
        for proto in sorted(p for p in wanted if wanted[p]):
            spans = port_ranges(wanted[proto])
            for start in range(0, len(spans), _RANGES_PER_DUMP):
                program = bytecode(spans[start : start + _RANGES_PER_DUMP])
                for family in (socket.AF_INET, socket.AF_INET6):
                    found.extend(row for row in _dump(diag, family, proto, states=states[proto],
                                                      program=program)
                                 if row[3] in wanted[proto])  # fmt: skip
    return found


def port_ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    """PORTS as the fewest inclusive ranges, in order."""
    spans: list[tuple[int, int]] = []
    for port in sorted(set(ports)):
        if spans and port == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], port)
        else:
            spans.append((port, port))
    return spans


def bytecode(spans: Sequence[tuple[int, int]]) -> bytes:
    """inet_diag's filter program accepting a source port in any of SPANS (linux/inet_diag.c,
    inet_diag_bc_run): each op jumps `yes` bytes when its test holds, else `no`; landing
    exactly on the end accepts, jumping 4 bytes past it rejects. `yes` is one byte, `no` two,
    so each range is `S_GE first`, `S_LE last` (each followed by an op carrying its port in
    `no`) and a JMP, whose `no` makes the long jump to the end."""
    if len(spans) > _RANGES_PER_DUMP:
        raise ValueError(f"{len(spans)} port ranges: one filter holds {_RANGES_PER_DUMP}")
    length = _RANGE_BYTES * len(spans)
    program = bytearray()
    for index, (first, last) in enumerate(spans):
        left = length - _RANGE_BYTES * index  # bytes from this range's first op to the end
        final = index == len(spans) - 1
        # S_GE fails: the next range, or reject after the last.
        program += struct.pack("=BBH", _BC_S_GE, 8, left + 4 if final else _RANGE_BYTES)
        program += struct.pack("=BBH", 0, 0, first)
        # S_LE holds: on to the JMP; fails: the next range, or reject.
        program += struct.pack("=BBH", _BC_S_LE, 8, 16 if final else 12)
        program += struct.pack("=BBH", 0, 0, last)
        # JMP always takes `no`: to the end, accept.
        program += struct.pack("=BBH", _BC_JMP, 4, left - 16)
    return bytes(program)


def listeners() -> list[Occupant]:
    """Every listening TCP and bound, unconnected UDP socket in this network namespace."""
    found: list[Row] = []
    with _Diag() as diag:
        diag.bind()
        for proto, state in (("tcp", _TCP_LISTEN), ("udp", _TCP_CLOSE)):
            for family in (socket.AF_INET, socket.AF_INET6):
                # The kernel filters by state, so established connections are never sent.
                found.extend(_dump(diag, family, proto, states=1 << state))
    return occupants(found)


def _dump(
    diag: _Diag, family: int, proto: str, *, states: int, program: bytes | None = None
) -> Iterator[Row]:
    request = _diag_req()
    request["sdiag_family"] = family
    request["sdiag_protocol"] = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
    request["idiag_states"] = states
    if program:
        request["attrs"] = [("INET_DIAG_REQ_BYTECODE", program)]
    for message in diag.nlm_request(request, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP):
        row = _row(message, proto)
        if row is not None:
            yield row


def _row(message: Any, proto: str) -> Row | None:
    if message.get("header", {}).get("type") != SOCK_DIAG_BY_FAMILY:
        return None
    state = message["idiag_state"]
    time_wait = state == _TCP_TIME_WAIT
    dport = message["idiag_dport"]
    cgroup_id = message.get_attr("INET_DIAG_CGROUP_ID")
    return (
        proto, state, str(message["idiag_src"]), message["idiag_sport"],
        str(message["idiag_dst"]) if dport else None, dport, message["idiag_inode"],
        message["idiag_uid"], None if time_wait or not cgroup_id else int(cgroup_id),
        bool(message.get_attr("INET_DIAG_SKV6ONLY")),
        message["idiag_expires"] if time_wait else None, message["idiag_cookie"],
    )  # fmt: skip


def occupants(found: Iterable[Row]) -> list[Occupant]:
    from portguard.host.occupants import from_rows  # noqa: PLC0415 - see TYPE_CHECKING above

    return from_rows(found)

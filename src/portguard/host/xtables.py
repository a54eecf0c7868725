"""The x_tables blobs iptables-nft stores in its compat `match`/`target` expressions.

The few kube-proxy, CNI's portmap, Docker and firewalld's iptables backend use in NAT chains,
decoded from the kernel's structs (linux/netfilter/xt_*.h, nf_nat.h): in the host's byte order
except addresses and a NAT range's ports, which are in network order. Anything else comes back
as None: the policy then says it could not judge the rule.
"""

import struct
from dataclasses import dataclass

# xt_addrtype: RTN_* as bits.
ADDRTYPE_LOCAL = 1 << 2
_ADDRTYPE_INVERT_SOURCE, _ADDRTYPE_INVERT_DEST = 0x1, 0x2
_MULTIPORT_SOURCE, _MULTIPORT_DESTINATION, _MULTIPORT_EITHER = 0, 1, 2
_NAT_MAP_IPS, _NAT_PROTO_SPECIFIED = 0x1, 0x2
_XT_INV_SRCPT, _XT_INV_DSTPT = 0x1, 0x2
# Targets that change a packet's mark or log it and let it go on: not a verdict.
GOES_ON = frozenset({"MARK", "CONNMARK", "LOG", "NFLOG", "CT", "TRACE", "CLASSIFY"})
# Targets that end the packet's way through the NAT hook without taking it elsewhere.
ENDS_HERE = frozenset({"MASQUERADE", "SNAT", "ACCEPT", "NETMAP"})


@dataclass(frozen=True, slots=True)
class AddrType:
    source: int  # a bit mask of RTN_* types; 0: any
    dest: int
    invert_source: bool
    invert_dest: bool
    limit_in: bool  # --limit-iface-in: the packet's own interface decides


@dataclass(frozen=True, slots=True)
class PortMatch:
    """Which ports of which side a match takes: (first, last) pairs, or the negation."""

    side: str  # "source", "destination" or "either"
    ranges: tuple[tuple[int, int], ...]
    invert: bool = False


@dataclass(frozen=True, slots=True)
class NatTo:
    """Where a DNAT or REDIRECT target sends the packet: None where it keeps what it had."""

    address: bytes | None
    first_port: int | None
    last_port: int | None


def comment(info: bytes) -> str:
    return info.split(b"\0", 1)[0].decode(errors="replace")


def addrtype(rev: int, info: bytes) -> AddrType | None:
    if rev == 0 and len(info) >= 8:  # xt_addrtype_info: u16 source, dest; u32 invert_src, _dst
        source, dest, inv_s, inv_d = struct.unpack_from("=HHII", info.ljust(12, b"\0"))
        return AddrType(source, dest, bool(inv_s), bool(inv_d), limit_in=False)
    if rev == 1 and len(info) >= 8:  # xt_addrtype_info_v1: u16 source, dest; u32 flags
        source, dest, flags = struct.unpack_from("=HHI", info)
        return AddrType(
            source,
            dest,
            bool(flags & _ADDRTYPE_INVERT_SOURCE),
            bool(flags & _ADDRTYPE_INVERT_DEST),
            limit_in=bool(flags & 0x4),
        )
    return None


def ports(name: str, rev: int, info: bytes) -> list[PortMatch] | None:
    """The port conditions of a tcp, udp or multiport match (every one must hold)."""
    if name in ("tcp", "udp") and len(info) >= 8:
        sports = struct.unpack_from("=HH", info, 0)
        dports = struct.unpack_from("=HH", info, 4)
        # xt_tcp: spts, dpts, option, flg_mask, flg_cmp, invflags; xt_udp: spts, dpts, invflags.
        if name == "tcp":
            option, flg_mask = info[8], info[9]
            if option or flg_mask:
                return None  # TCP options or flags: not a port question
            inv = info[11]
        else:
            inv = info[8]
        return [
            PortMatch("source", (sports,), bool(inv & _XT_INV_SRCPT)),
            PortMatch("destination", (dports,), bool(inv & _XT_INV_DSTPT)),
        ]
    if name == "multiport":
        return _multiport(rev, info)
    return None


def _multiport(rev: int, info: bytes) -> list[PortMatch] | None:
    if len(info) < 2 + 30:
        return None
    flags, count = info[0], info[1]
    side = {_MULTIPORT_SOURCE: "source", _MULTIPORT_DESTINATION: "destination"}.get(flags, "either")
    listed = struct.unpack_from("=15H", info, 2)[:count]
    if rev == 0:
        return [PortMatch(side, tuple((p, p) for p in listed))]
    pflags = info[32 : 32 + 15]
    invert = bool(info[47]) if len(info) > 47 else False
    ranges, i = [], 0
    while i < count:
        if pflags[i] and i + 1 < count:  # this port begins a range ending at the next one
            ranges.append((listed[i], listed[i + 1]))
            i += 2
        else:
            ranges.append((listed[i], listed[i]))
            i += 1
    return [PortMatch(side, tuple(ranges), invert)]


def nat_to(name: str, rev: int, family: str, info: bytes) -> NatTo | None:
    """A DNAT or REDIRECT target's destination, in any of the kernel's three layouts."""
    if rev == 0 and family == "ip":
        # nf_nat_ipv4_multi_range_compat: u32 rangesize; {u32 flags; be32 min_ip, max_ip;
        # be16 min, max} (the only layout IPv4's revision 0 has).
        if len(info) < 20:
            return None
        flags, min_ip = struct.unpack_from("=I4s", info, 4)
        first, last = struct.unpack_from(">HH", info, 16)
        return _nat(flags, min_ip, first, last, 4)
    # nf_nat_range (rev 1, and IPv6's rev 0) and nf_nat_range2 (rev 2): u32 flags;
    # 16-byte min_addr, max_addr; be16 min_proto, max_proto (then rev 2's base_proto).
    if len(info) < 40:
        return None
    flags = struct.unpack_from("=I", info, 0)[0]
    size = 4 if family == "ip" else 16
    first, last = struct.unpack_from(">HH", info, 36)
    return _nat(flags, info[4 : 4 + size], first, last, size)


def _nat(flags: int, address: bytes, first: int, last: int, size: int) -> NatTo:
    return NatTo(
        address[:size] if flags & _NAT_MAP_IPS else None,
        first if flags & _NAT_PROTO_SPECIFIED else None,
        last if flags & _NAT_PROTO_SPECIFIED else None,
    )

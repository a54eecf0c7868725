"""IPVS virtual services, from /proc/net/ip_vs (the kernel's text, net/netfilter/ipvs/
ip_vs_ctl.c, ip_vs_info_seq_show): kube-proxy's IPVS mode puts every NodePort there, one
virtual service on each node address. Absent when the kernel has no IPVS or none is loaded."""

import ipaddress
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc/net/ip_vs")
_PROTOS = {"TCP": 6, "UDP": 17, "SCTP": 132}


@dataclass(frozen=True, slots=True)
class VirtualService:
    proto: int  # 6, 17, 132; 0 for a firewall-mark service
    address: bytes  # packed; empty for a firewall-mark service
    port: int
    scheduler: str
    reals: tuple[tuple[bytes, int, str], ...] = ()  # (address, port, forward method)
    mark: int | None = None  # FWM services match a mark, not an address


def virtual_services(path: Path = PROC) -> list[VirtualService]:
    """Every virtual service; [] without IPVS."""
    try:
        text = path.read_text()
    except OSError:
        return []
    return parse(text)


def parse(text: str) -> list[VirtualService]:
    found: list[VirtualService] = []
    current: VirtualService | None = None
    reals: list[tuple[bytes, int, str]] = []
    for line in text.splitlines()[3:]:  # the version and the two heading lines
        words = line.split()
        if not words:
            continue
        if words[0] == "->" and current is not None and len(words) >= 3:
            address, port = _endpoint(words[1])
            reals.append((address, port, words[2]))
            continue
        if current is not None:
            found.append(_with(current, reals))
        reals = []
        if words[0] == "FWM" and len(words) >= 3:
            current = VirtualService(0, b"", 0, words[2], mark=int(words[1], 16))
        elif words[0] in _PROTOS and len(words) >= 3:
            address, port = _endpoint(words[1])
            current = VirtualService(_PROTOS[words[0]], address, port, words[2])
        else:
            current = None
    if current is not None:
        found.append(_with(current, reals))
    return found


def _with(service: VirtualService, reals: list[tuple[bytes, int, str]]) -> VirtualService:
    return VirtualService(service.proto, service.address, service.port, service.scheduler,
                          tuple(reals), service.mark)  # fmt: skip


def _endpoint(text: str) -> tuple[bytes, int]:
    """`0A0A0A0A:0050` (IPv4 in hex, host order) or `[fe80::1]:0050` (IPv6)."""
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        return ipaddress.IPv6Address(host[1:-1]).packed, int(port, 16)
    return int(host, 16).to_bytes(4, "big"), int(port, 16)

"""The kernel's local port settings: net.ipv4.ip_local_port_range and ip_local_reserved_ports.

Both apply to TCP and UDP, IPv4 and IPv6 alike.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROC_SYS = Path("/proc/sys")
PORT_RANGE = "net/ipv4/ip_local_port_range"
RESERVED_PORTS = "net/ipv4/ip_local_reserved_ports"
# Larger than the longest list the kernel can print (every other port of 1-65535: ~200 KiB).
_READ_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class PortSet:
    """Ports as sorted, disjoint, non-adjacent inclusive ranges."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, ranges: list[tuple[int, int]]) -> "PortSet":
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return cls(tuple(merged))

    @classmethod
    def parse(cls, text: str) -> "PortSet":
        """The kernel's list syntax: `8080,9000-9010` (empty for none)."""
        ranges = []
        for raw in text.replace("\n", ",").split(","):
            item = raw.strip()
            if not item:
                continue
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
        return cls.of(ranges)

    def __str__(self) -> str:
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)

    def __or__(self, other: "PortSet") -> "PortSet":
        return PortSet.of([*self.ranges, *other.ranges])

    def missing(self, first: int, last: int) -> "PortSet":
        """The ports of first..last that are not in this set."""
        gaps: list[tuple[int, int]] = []
        cursor = first
        for a, b in self.ranges:
            if b < cursor or a > last:
                continue
            if a > cursor:
                gaps.append((cursor, a - 1))
            cursor = b + 1
            if cursor > last:
                break
        if cursor <= last:
            gaps.append((cursor, last))
        return PortSet(tuple(gaps))


@dataclass(frozen=True, slots=True)
class LocalPorts:
    """The ephemeral range outgoing connections take ports from, and the ports kept out of it."""

    ephemeral: tuple[int, int]
    reserved: PortSet

    def unprotected(self, first: int, last: int) -> PortSet:
        """Ports of first..last an outgoing connection may take before a service binds them."""
        low, high = max(first, self.ephemeral[0]), min(last, self.ephemeral[1])
        if low > high:
            return PortSet()
        return self.reserved.missing(low, high)


def read_sysctl(path: Path) -> str:
    """A sysctl's whole value, in one read(): the kernel prints a port list only at offset 0,
    so a second read returns nothing, and a buffered read_text() cuts a long list at 8 KiB.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _READ_LIMIT)
    finally:
        os.close(fd)
    if len(data) >= _READ_LIMIT:
        raise ValueError(f"{path}: value longer than {_READ_LIMIT} bytes")
    return data.decode("ascii")


def read_local_ports(proc_sys: Path = PROC_SYS) -> LocalPorts | None:
    """The running kernel's settings, or None where they cannot be read (no /proc, no netns)."""
    try:
        low, high = read_sysctl(proc_sys / PORT_RANGE).split()
        reserved = read_sysctl(proc_sys / RESERVED_PORTS)
        return LocalPorts((int(low), int(high)), PortSet.parse(reserved))
    except (OSError, ValueError):
        return None

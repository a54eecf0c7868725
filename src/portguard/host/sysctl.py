"""The kernel's local port settings: net.ipv4.ip_local_port_range and ip_local_reserved_ports.

Both apply to TCP and UDP, IPv4 and IPv6 alike.
"""

import os
from pathlib import Path

from portguard.registry.localports import LocalPorts, PortSet

PROC_SYS = Path("/proc/sys")
PORT_RANGE = "net/ipv4/ip_local_port_range"
RESERVED_PORTS = "net/ipv4/ip_local_reserved_ports"
# Larger than the longest list the kernel can print (every other port of 1-65535: ~200 KiB).
_READ_LIMIT = 1 << 20


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

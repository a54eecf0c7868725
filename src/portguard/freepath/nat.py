"""Whether a NAT rule may take the unit's ports: on the free path, from builtins only.

A port can be taken where bind() never looks (DESIGN rule 5): a DNAT or REDIRECT rule sends
its traffic elsewhere. Judging that means reading the whole nftables ruleset, which the full
`check` does (policy/redirects.py). Here it is only remembered: the full `check` leaves a mark
in /run/portguard when the ruleset, at its generation number in its network namespace, has no
NAT chain at all (`nat`), takes nothing from a unit's ports (`nat-UNIT`, with the registry's
hash), or singles out only some ports, any other port being taken by nothing (`nat-.ports`).
The kernel bumps that number at every change, so asking for it (one netlink round trip)
tells whether a mark still holds.
"""

import _socket
import posix

from portguard.freepath import cache
from portguard.freepath.trust import join, read_trusted

_NETLINK_NETFILTER = 12
_GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
_NLMSG_ERROR = 2
_MODULE_DIR = "/lib/modules/{}/kernel/net/netfilter/nf_tables.ko"
# The mark of the ports no NAT rule singles out, for every unit (marker(PORTS)).
PORTS = ".ports"
_WILDCARDS = ("", "0.0.0.0", "::")


def untouched(unit: str, key: bytes, binds: "list[tuple[str, int, str]]") -> bool:
    """Whether the full `check` has found that no NAT rule takes UNIT's ports, or any port
    outside those the rules single out (BINDS: each bind's "tcp"/"udp", port and host), and
    the ruleset has not changed since; False when that is not known."""
    if _legacy_nat() or _ipvs_services():
        return False  # neither has a generation number: the full check reads them
    if not nftables_in_use():
        return True
    state = ruleset_state()
    if state is None:
        return False
    if read_trusted(marker()) == f"{state} none".encode():
        return True
    if read_trusted(marker(unit)) == f"{state} {key.hex()}".encode():
        return True
    return _outside_named_ports(state, binds)


def _outside_named_ports(state: str, binds: "list[tuple[str, int, str]]") -> bool:
    """Whether every bind is on all addresses and on a port no NAT rule singles out, as the
    last full `check` found at this generation (one reading serves every unit's guard)."""
    data = read_trusted(marker(PORTS))
    if data is None:
        return False
    lines = data.decode(errors="replace").splitlines()
    if not lines or lines[0] != state:
        return False
    singled: dict[str, list[tuple[int, int]]] = {}
    try:
        for line in lines[1:]:
            proto, *spans = line.split()
            singled[proto] = [(int(a), int(b)) for a, _, b in (s.partition("-") for s in spans)]
    except ValueError:
        return False  # not a mark we wrote: the full check reads the ruleset
    for proto, port, host in binds:
        if host not in _WILDCARDS or proto not in singled:
            return False
        if any(lo <= port <= hi for lo, hi in singled[proto]):
            return False
    return True


def ruleset_state() -> str | None:
    """The ruleset's generation in this network namespace: `NETNS GENERATION`. Each network
    namespace has its own ruleset and numbers its own generations, and /run/portguard is
    shared by the guards of every one of them (a unit with PrivateNetwork=, say)."""
    gen = generation()
    if gen is None:
        return None
    try:
        netns = posix.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None
    return f"{netns} {gen}"


def marker(unit: str | None = None) -> str:
    return join(cache.CACHE_DIR, "nat" if unit is None else f"nat-{unit}")


def generation() -> int | None:
    """The nftables ruleset's generation number; None when it cannot be read (no
    CAP_NET_ADMIN: an unprivileged guard)."""
    try:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.settimeout(1.0)
        header = (20).to_bytes(4, "little") + _GETGEN.to_bytes(2, "little")
        sock.send(header + (1).to_bytes(2, "little") + (1).to_bytes(4, "little") + bytes(8))
        reply = sock.recv(4096)
    except OSError:
        return None
    finally:
        sock.close()
    if len(reply) < 28 or int.from_bytes(reply[4:6], "little") == _NLMSG_ERROR:
        return None
    offset = 20  # netlink header, nfgenmsg
    while offset + 8 <= len(reply):
        size = int.from_bytes(reply[offset : offset + 2], "little")
        if int.from_bytes(reply[offset + 2 : offset + 4], "little") & 0x3FFF == 1:
            return int.from_bytes(reply[offset + 4 : offset + 8], "big")
        if size < 4:
            break
        offset += (size + 3) & ~3
    return None


def _legacy_nat() -> bool:
    """Whether the legacy x_tables backend has a NAT table in this network namespace."""
    for path in ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"):
        try:
            fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
        except OSError:
            continue
        try:
            if b"\nnat\n" in b"\n" + posix.read(fd, 4096):
                return True
        finally:
            posix.close(fd)
    return False


def _ipvs_services() -> bool:
    """Whether IPVS has a virtual service (beyond /proc/net/ip_vs's three heading lines)."""
    try:
        fd = posix.open("/proc/net/ip_vs", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False  # no IPVS in this kernel, or not loaded
    try:
        return posix.read(fd, 4096).count(b"\n") > 3
    finally:
        posix.close(fd)


def nftables_in_use() -> bool:
    """False only when nf_tables is a module not loaded: no ruleset, and asking would load it.
    A loaded module is always under /sys/module; a built-in one has no module file."""
    if _exists("/sys/module/nf_tables"):
        return True
    base = _MODULE_DIR.format(posix.uname().release)
    return not any(_exists(base + suffix) for suffix in ("", ".xz", ".zst", ".gz"))


def _exists(path: str) -> bool:
    try:
        posix.stat(path)
    except OSError:
        return False
    return True

"""`portguard reserve`: keep the registry's ports out of the kernel's ephemeral port choice.

An outgoing connection takes its local port from net.ipv4.ip_local_port_range; a service's
port inside that range can be taken that way before the service binds it. The kernel skips
the ports in net.ipv4.ip_local_reserved_ports (one list for TCP and UDP, IPv4 and IPv6, per
network namespace; explicit binds are not affected). This sets that list to what is set now
plus every port of every concrete registry claim, so nobody else's entries are ever dropped.

A template's `%i` claim has no port until an instance exists; it is left out, and said so.
"""

import errno
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from portguard.errors import CannotWrite, Denied, Exit, Unavailable
from portguard.host.sysctl import PROC_SYS, RESERVED_PORTS, read_local_ports, read_sysctl
from portguard.registry.entries import REGISTRY_DIR, Registry
from portguard.registry.localports import LocalPorts, PortSet

SYSCTL_NAME = "net.ipv4.ip_local_reserved_ports"
# The kernel parses at most a page less one byte per write() and ORs each later write on the
# same open file into the list, so a long list goes in pieces cut at commas.
_WRITE_CHUNK = 4000
_DENIED = (errno.EACCES, errno.EPERM)


@dataclass(frozen=True, slots=True)
class Reservation:
    current: PortSet  # what the kernel has now
    registered: PortSet  # every port of every concrete claim
    left_out: tuple[tuple[str, str], ...] = ()  # (template unit, `%i` claim): no port yet

    @property
    def merged(self) -> PortSet:
        return self.current | self.registered

    @property
    def added(self) -> PortSet:
        """The registered ports not reserved yet."""
        gaps = [g for a, b in self.registered.ranges for g in self.current.missing(a, b).ranges]
        return PortSet.of(gaps)


def plan(registry: Registry, current: PortSet) -> Reservation:
    """The reservation for REGISTRY on top of CURRENT (pure)."""
    ranges: list[tuple[int, int]] = []
    left_out: list[tuple[str, str]] = []
    for name, entry in registry.units.items():
        for listen in entry.listen:
            if listen.is_template:
                left_out.append((name, listen.text))
            else:
                claim = listen.claim()
                ranges.append((claim.first, claim.last))
    return Reservation(current, PortSet.of(ranges), tuple(left_out))


def read_reserved(path: Path) -> PortSet:
    try:
        return PortSet.parse(read_sysctl(path))
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise Unavailable(f"cannot read {path}: not a list of ports") from None


def _chunks(value: str) -> Iterator[bytes]:
    data = value.encode("ascii")
    start = 0
    while len(data) - start > _WRITE_CHUNK:
        end = data.rindex(b",", start, start + _WRITE_CHUNK)
        yield data[start : end + 1]
        start = end + 1
    yield data[start:]


def write_reserved(path: Path, ports: PortSet) -> None:
    """Write PORTS as the whole list (the first write replaces it, later ones add to it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            for chunk in _chunks(str(ports)):
                if os.write(fd, chunk) != len(chunk):
                    raise OSError(errno.EIO, "the kernel took only part of the list")
        finally:
            os.close(fd)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in _DENIED:
            raise Denied(f"cannot write {path}: {reason} (run as root)") from None
        raise CannotWrite(f"cannot write {path}: {reason}") from None
    written = read_reserved(path)
    if written != ports:
        raise CannotWrite(
            f"wrote {ports} to {path}, but it reads back {written if written.ranges else 'nothing'}"
        )


def run(
    registry: Path | None,
    *,
    apply: bool,
    proc_sys: Path | None = None,
    local_ports: LocalPorts | None = None,
) -> int:
    """Print the merged list on stdout, what it adds on stderr; with APPLY, write it. Warn
    when the reservations would take more than half of the ephemeral range (LOCAL_PORTS:
    this kernel's when not given)."""
    from portguard.commands.trusted import registry_at  # noqa: PLC0415 - YAML only when needed

    loaded = registry_at(registry or REGISTRY_DIR)
    sysctl = (proc_sys or PROC_SYS) / RESERVED_PORTS
    reservation = plan(loaded, read_reserved(sysctl))
    merged, added = reservation.merged, reservation.added
    if apply and added.ranges:
        write_reserved(sysctl, merged)
    # Said after the write, so that a failure is the only line.
    settings = local_ports or read_local_ports(proc_sys or PROC_SYS)
    crowding = settings.crowding(merged) if settings is not None else None
    if crowding is not None:
        _say(f"warning: {crowding}")
    for unit, claim in reservation.left_out:
        _say(f"left out {claim} of {unit}: a template's port is known only per instance")
    if not added.ranges:
        done = "; nothing written" if apply else ""
        _say(f"every registered port is already in {SYSCTL_NAME}{done}")
    elif apply:
        _say(f"added {added} to {SYSCTL_NAME}")
    else:
        _say(f"would add {added} to {SYSCTL_NAME} (--apply writes it)")
    print(merged)
    return int(Exit.OK)


def _say(line: str) -> None:
    print(f"portguard: {line}", file=sys.stderr)

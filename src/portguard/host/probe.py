"""The ground truth: a trial bind() of each claim with the options the service will use.

Stdlib only and cheap: this runs before every guarded start at every boot. No listen()
follows the bind, so a probe never accepts a connection and leaves no TIME-WAIT behind.
"""

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from portguard.freepath.binds import BindSpec, Identity, bind_errno, with_socket_options
from portguard.registry.claims import Claim, Proto, host_text


class Outcome(StrEnum):
    FREE = "free"
    IN_USE = "in-use"  # EADDRINUSE: someone holds it
    UNASSIGNABLE = "unassignable"  # EADDRNOTAVAIL: the address is not on this host
    DENIED = "denied"  # EACCES/EPERM: privileged port, or SocketBindDeny=


@dataclass(frozen=True, slots=True)
class Bind:
    """One trial bind: a family's address and one port of a claim."""

    claim: Claim
    host: str  # what bind() was given: '0.0.0.0', '::', '127.0.0.1', ...
    port: int
    v6only: bool  # IPV6_V6ONLY on an AF_INET6 socket

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"{host_text(ipaddress.ip_address(self.host))}:{self.port}/{self.claim.proto}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One trial bind and how it went."""

    bind: Bind
    outcome: Outcome
    errno: int = 0


_OUTCOMES = {
    errno.EADDRINUSE: Outcome.IN_USE,
    errno.EADDRNOTAVAIL: Outcome.UNASSIGNABLE,
    errno.EAFNOSUPPORT: Outcome.UNASSIGNABLE,
    errno.EACCES: Outcome.DENIED,
    errno.EPERM: Outcome.DENIED,
}


def binds(claim: Claim, *, ipv6: bool = True) -> Iterator[Bind]:
    """The binds that prove CLAIM: a bare wildcard is proved on 0.0.0.0 and on [::]."""
    for port in claim.ports:
        if claim.address is None:
            yield Bind(claim, "0.0.0.0", port, v6only=False)
            if ipv6:
                # v6only so this bind tests IPv6 alone; the IPv4 one above tests IPv4.
                yield Bind(claim, "::", port, v6only=True)
        elif claim.address.version == 6:
            yield Bind(claim, str(claim.address), port, v6only=claim.v6only)
        else:
            yield Bind(claim, str(claim.address), port, v6only=False)


def spec_of(bind: Bind, *, template: bool = False) -> BindSpec:
    """The bind as the hot path executes it; the one place a service's options are mapped."""
    claim = bind.claim
    tcp = claim.proto is Proto.TCP
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    port = None if template else bind.port
    return (int(bind.family), int(kind), bind.host, port, claim.reuseaddr, claim.reuseport,
            bind.v6only, claim.freebind)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Binder:
    """Who binds and how, when that is not simply the registry's claim bound by this process:
    the service's identity, and a .socket unit's own options (both from the drop-in)."""

    identity: Identity = None
    socket_options: frozenset[str] | None = None
    dynamic: bool = False  # a DynamicUser= unit: its uid is picked at start (binds.DYNAMIC)


def try_bind(bind: Bind, binder: Binder | None = None) -> Attempt:
    """Bind once with the service's options, then close; never listen()."""
    binder = binder or Binder()
    spec = with_socket_options(spec_of(bind), binder.socket_options)
    code = bind_errno(spec, bind.port, binder.identity)
    if code == 0:
        return Attempt(bind, Outcome.FREE)
    if code not in _OUTCOMES:
        raise OSError(code, f"trial bind of {bind}: {os.strerror(code)}")
    return Attempt(bind, _OUTCOMES[code], code)


@dataclass(frozen=True, slots=True)
class PoolFamily:
    """A pool's trial binds in one family (one bind of its claim per port), port after port
    until min-free of them succeed: how many did, the first that found its port in use, and
    the first refused for another reason (the address is not here, a privileged port)."""

    claim: Claim
    free: int  # up to min-free: the binds stop there
    in_use: int
    first_in_use: Attempt | None
    refused: Attempt | None

    @property
    def serves(self) -> bool:
        return self.claim.pool is not None and self.free >= self.claim.pool


def probe_pool(claim: Claim, binder: Binder | None = None) -> list[PoolFamily]:
    """Trial-bind a pool as the service draws from it: one family's result each."""
    need = claim.pool or 1
    families = []
    for family in binds(replace(claim, last=claim.first), ipv6=ipv6_available()):
        free = in_use = 0
        first_in_use = refused = None
        for port in claim.ports:
            attempt = try_bind(replace(family, claim=claim, port=port), binder)
            if attempt.outcome is Outcome.FREE:
                free += 1
                if free >= need:
                    break
            elif attempt.outcome is Outcome.IN_USE:
                in_use += 1
                first_in_use = first_in_use or attempt
            else:
                refused = refused or attempt
        families.append(PoolFamily(claim, free, in_use, first_in_use, refused))
    return families


def ipv6_available() -> bool:
    """Whether this network namespace can have IPv6 sockets at all (ipv6.disable=1 says no)."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


def probe(claims: Iterable[Claim], binder: Binder | None = None) -> list[Attempt]:
    """Trial-bind every claim; the list holds one attempt per family and port."""
    ipv6 = ipv6_available()
    return [try_bind(b, binder) for claim in claims for b in binds(claim, ipv6=ipv6)]

"""The trial bind against the kernel: the probe says `free` exactly when the service's own
bind would succeed. Each case binds once through the probe (as root, taking on the service's
identity as the `+` guard does) and once in a child that really is the service's user, with
the same options, and the two errnos must agree."""

import errno
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from portguard.host.probe import Bind, Binder, try_bind
from portguard.registry.claims import Claim, Proto
from tests.conftest import SYSTEM_PYTHON
from tests.unprivileged import run_as

NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="taking on another identity needs root, as the `+` guard has"
)

# Binds HOST:PORT with the options given and prints the errno (0 when it bound).
ORACLE = """
import socket, sys
family, kind, host, port, reuseaddr, reuseport, freebind = sys.argv[1:]
sock = socket.socket(int(family), int(kind))
try:
    if reuseaddr == "1": sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport == "1": sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if int(family) == socket.AF_INET6: sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if freebind == "1": sock.setsockopt(socket.IPPROTO_IP, 15, 1)
    sock.bind((host, int(port)))
    print(0)
except OSError as exc:
    print(exc.errno)
"""


def oracle(claim: Claim, host: str, port: int, uid: int) -> int:
    """What the kernel answers the service's own bind, as UID."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if claim.proto is Proto.TCP else socket.SOCK_DGRAM
    flags = [str(int(v)) for v in (claim.reuseaddr, claim.reuseport, claim.freebind)]
    argv = [SYSTEM_PYTHON, "-I", "-c", ORACLE, str(int(family)), str(int(kind)), host, str(port),
            *flags]  # fmt: skip
    if uid != 0:
        done = run_as(uid, argv, timeout=30)
        assert done.returncode == 0, done.stderr
    else:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return int(done.stdout)


def probed(claim: Claim, host: str, port: int, binder: Binder) -> int:
    attempt = try_bind(Bind(claim, host, port, v6only=":" in host), binder)
    return attempt.errno


@contextmanager
def holding(kind: socket.SocketKind, port: int, *, uid: int = 0, **options: bool) -> Iterator[int]:
    """A socket on 127.0.0.1:PORT created as UID with OPTIONS (reuseaddr, reuseport)."""
    if uid:
        os.seteuid(uid)
    try:
        sock = socket.socket(socket.AF_INET, kind)
    finally:
        if uid:
            os.seteuid(0)
    with sock:
        if options.get("reuseaddr"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if options.get("reuseport"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        yield port


def free_port(kind: socket.SocketKind, below: int = 65536) -> int:
    candidates = range(below - 1, 0, -1) if below <= 1024 else [0]
    for candidate in candidates:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
            if port < below:
                return port
    raise AssertionError("no free port")


@needs_root
@pytest.mark.parametrize(
    ("uid", "may_bind"), [(NOBODY, False), (NOBODY, True), (0, False), (0, True)]
)
@pytest.mark.parametrize("proto", [Proto.TCP, Proto.UDP])
def test_a_privileged_port_answers_as_the_services_identity(
    uid: int, may_bind: bool, proto: Proto
) -> None:
    kind = socket.SOCK_STREAM if proto is Proto.TCP else socket.SOCK_DGRAM
    port = free_port(kind, below=1024)
    claim = Claim(proto, port, port)
    got = probed(claim, "127.0.0.1", port, Binder((uid, may_bind)))
    # The oracle: a process that really is nobody (without the capability), or root.
    truth = oracle(claim, "127.0.0.1", port, NOBODY if not may_bind else 0)
    assert got == truth
    assert got == (0 if may_bind else errno.EACCES)


@needs_root
@pytest.mark.parametrize("holder_uid", [0, NOBODY])
@pytest.mark.parametrize("service_uid", [0, NOBODY])
@pytest.mark.parametrize("proto", [Proto.TCP, Proto.UDP])
def test_a_reuseport_group_takes_only_its_own_uid(
    holder_uid: int, service_uid: int, proto: Proto
) -> None:
    kind = socket.SOCK_STREAM if proto is Proto.TCP else socket.SOCK_DGRAM
    with holding(kind, free_port(kind), uid=holder_uid, reuseport=True) as port:
        claim = Claim(proto, port, port, reuseport=True, reuseaddr=False)
        got = probed(claim, "127.0.0.1", port, Binder((service_uid, service_uid == 0)))
        truth = oracle(claim, "127.0.0.1", port, service_uid)
    assert got == truth
    assert got == (0 if holder_uid == service_uid else errno.EADDRINUSE)


@pytest.mark.parametrize("holder_reuseaddr", [False, True])
@pytest.mark.parametrize("service_reuseaddr", [False, True])
def test_udp_shares_a_port_only_when_both_set_so_reuseaddr(
    holder_reuseaddr: bool, service_reuseaddr: bool
) -> None:
    """mDNS responders side by side: the kernel lets both bind 5353 with SO_REUSEADDR."""
    with holding(socket.SOCK_DGRAM, free_port(socket.SOCK_DGRAM),
                 reuseaddr=holder_reuseaddr) as port:  # fmt: skip
        claim = Claim(Proto.UDP, port, port, reuseaddr=service_reuseaddr)
        got = probed(claim, "127.0.0.1", port, Binder())
        truth = oracle(claim, "127.0.0.1", port, os.geteuid())
    assert got == truth
    assert got == (0 if holder_reuseaddr and service_reuseaddr else errno.EADDRINUSE)


@pytest.mark.parametrize("freebind", [False, True])
def test_freebind_binds_an_address_this_host_does_not_have(freebind: bool) -> None:
    """A VIP that keepalived has not moved here yet (TEST-NET-1, never on a host)."""
    port = free_port(socket.SOCK_STREAM)
    claim = Claim(Proto.TCP, port, port, freebind=freebind)
    got = probed(claim, "192.0.2.1", port, Binder())
    assert got == oracle(claim, "192.0.2.1", port, os.geteuid())
    assert got == (0 if freebind else errno.EADDRNOTAVAIL)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (frozenset({"reuseaddr"}), errno.EADDRINUSE),
        (frozenset({"reuseaddr", "reuseport"}), 0),
    ],
)
def test_a_socket_units_options_replace_the_registrys(
    options: frozenset[str], expected: int
) -> None:
    """PID 1 binds with the socket unit's ReusePort=, whatever the registry says."""
    with holding(socket.SOCK_STREAM, free_port(socket.SOCK_STREAM), reuseport=True) as port:
        claim = Claim(Proto.TCP, port, port, reuseport=False)
        assert probed(claim, "127.0.0.1", port, Binder(None, options)) == expected


def test_a_bind_prints_a_v4_mapped_address_as_the_registry_writes_it() -> None:
    """Seen 13: [::ffff:192.0.2.1], not Python's [::ffff:c000:201], in every message."""
    import ipaddress  # noqa: PLC0415

    from portguard.host.probe import binds  # noqa: PLC0415

    claim = Claim(Proto.TCP, 8080, 8080, ipaddress.ip_address("::ffff:192.0.2.1"))
    assert [str(b) for b in binds(claim)] == ["[::ffff:192.0.2.1]:8080/tcp"]
    assert str(next(binds(Claim(Proto.UDP, 53, 53)))) == "0.0.0.0:53/udp"

"""Sleeping until the kernel says a wait may be over: a process exited (its pidfd becomes
readable) or a socket on a waited port was destroyed (sock_diag's destroy notifications).

The notifications are the netlink multicast groups SKNLGRP_INET_TCP_DESTROY and its UDP and
IPv6 siblings (linux/sock_diag.h, Linux 4.x): each message is a SOCK_DIAG_BY_FAMILY message
with the inet_diag_msg of the socket that went. Joining them needs CAP_NET_ADMIN; without it
the watch is simply not there and the caller polls. A socket is recognised by its cookie
(the kernel's id of it; the inode of a socket being destroyed is already 0), never by its
port: the waiter's own trial binds come and go on that port too. Stdlib only: the cookie
sits at a fixed offset of the message.
"""

import errno
import select
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from types import TracebackType

from portguard.host.processes import pidfds
from portguard.registry.claims import Proto

NETLINK_SOCK_DIAG = 4
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
# SKNLGRP_INET_TCP_DESTROY = 1, INET_UDP = 2, INET6_TCP = 3, INET6_UDP = 4.
_GROUPS = {Proto.TCP: (1, 3), Proto.UDP: (2, 4)}
SOCK_DIAG_BY_FAMILY = 20
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
# inet_diag_msg: family, state, timer, retrans (4 bytes), then inet_diag_sockid: sport,
# dport, src[16], dst[16], if (40 bytes), then its cookie.
_COOKIE = struct.Struct("=Q")
_COOKIE_OFFSET = 44


class DestroyWatch:
    """Destroy notifications for PROTOS' sockets, or nothing (`available` is False) when
    this process may not join the groups."""

    def __init__(self, protos: Iterable[Proto]) -> None:
        self.sock: socket.socket | None = None
        wanted = sorted({group for proto in protos for group in _GROUPS[proto]})
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        except OSError:
            return
        try:
            sock.bind((0, 0))
            for group in wanted:
                sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            sock.setblocking(False)
        except OSError:  # EPERM without CAP_NET_ADMIN
            sock.close()
            return
        self.sock = sock

    @property
    def available(self) -> bool:
        return self.sock is not None

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def destroyed(self, cookies: Iterable[int]) -> bool:
        """Read what is queued; whether a socket with one of COOKIES was among it. A queue
        that overflowed (ENOBUFS) may have dropped one: that counts as yes."""
        assert self.sock is not None
        wanted = set(cookies)
        hit = False
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return hit
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    hit = True
                    continue
                return True
            hit = hit or bool(wanted & set(_messages(data)))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> "DestroyWatch":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _messages(data: bytes) -> Iterable[int]:
    """The cookie of each destroy message in DATA."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            return
        body = offset + _NLMSG_HEADER.size
        if kind == SOCK_DIAG_BY_FAMILY and body + _COOKIE_OFFSET + _COOKIE.size <= offset + length:
            yield _COOKIE.unpack_from(data, body + _COOKIE_OFFSET)[0]
        offset += (length + 3) & ~3


def sleep(
    pids: Sequence[int], cookies: Sequence[int], seconds: float, watch: DestroyWatch | None
) -> str | None:
    """Until one of PIDS exits ("exit"), WATCH sees a socket of COOKIES destroyed
    ("destroy"), or SECONDS pass (None). A PID already gone is an exit at once."""
    with pidfds(pids) as descriptors:
        if descriptors is None:
            return "exit"
        poller = select.poll()
        for fd in descriptors:
            poller.register(fd, select.POLLIN)
        watching = watch is not None and watch.available and bool(cookies)
        if watching and watch is not None:
            poller.register(watch.fileno(), select.POLLIN)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready = {fd for fd, _ in poller.poll(max(1, int(left * 1000)))}
            if ready & set(descriptors):
                return "exit"
            ours = watching and watch is not None and watch.fileno() in ready
            if ours and watch is not None and watch.destroyed(cookies):
                return "destroy"
        return None

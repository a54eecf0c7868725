"""What /proc tells of a few known PIDs, and who their uids are. Never a scan of every process."""

import functools
import os
import pwd
import select
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BLIND_RETRY_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Process:
    """What an operator asks of a holder: what it is, whose, since when, started by whom."""

    pid: int
    comm: str | None
    cmdline: tuple[str, ...]
    uid: int | None
    ppid: int | None
    started: float | None  # seconds since the epoch


def process(pid: int, proc: str = "/proc") -> Process | None:
    """The process PID, or None when it is gone (or hidden from us)."""
    stat = read_text(f"{proc}/{pid}/stat")
    if not stat:
        return None
    # comm may hold spaces and parentheses: the fields that follow start after the last ")".
    fields = stat.rpartition(")")[2].split()
    status = read_text(f"{proc}/{pid}/status")
    uid = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("Uid:")), None)  # fmt: skip
    return Process(
        pid=pid,
        comm=read_text(f"{proc}/{pid}/comm").strip() or None,
        cmdline=cmdline(pid, proc),
        uid=uid,
        ppid=int(fields[1]) if len(fields) > 1 else None,
        started=_started(int(fields[19]), proc) if len(fields) > 19 else None,
    )


def _started(ticks: int, proc: str) -> float | None:
    """A process's start (clock ticks after boot, /proc/PID/stat) as seconds since the epoch."""
    for line in read_text(f"{proc}/stat").splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    return None


def read_text(path: str) -> str:
    """A small kernel file's text; empty when it cannot be read (gone, or not ours to read)."""
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def cmdline(pid: int, proc: str = "/proc") -> tuple[str, ...]:
    """The process's arguments (/proc/PID/cmdline), empty when it is gone or hidden."""
    text = read_text(f"{proc}/{pid}/cmdline").rstrip("\0")
    return tuple(text.split("\0")) if text else ()


def comm(pid: int) -> str | None:
    """The process's name (/proc/PID/comm), or None when it is gone."""
    return read_text(f"/proc/{pid}/comm").strip() or None


def socket_holders(
    pids: Iterable[int], wanted: set[int] | None = None
) -> dict[int, list[tuple[int, int]]]:
    """The sockets PIDS have open, by inode, with each (pid, fd) holding it: one pass over
    their descriptors answers for all of a cgroup's sockets (a busy service's thousands of
    connections, each asked about on its own, once cost a pass each). With WANTED, the pass
    stops after the process in which the last of those inodes turned up: a prefork
    server's workers, which hold what their parent holds, are then not read at all."""
    held: dict[int, list[tuple[int, int]]] = {}
    missing = set(wanted) if wanted is not None else None
    for pid in pids:
        if missing is not None and not missing:
            break
        directory = f"/proc/{pid}/fd/"
        try:
            fds = os.listdir(directory)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(directory + fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                held.setdefault(inode, []).append((pid, int(fd)))
                if missing is not None:
                    missing.discard(inode)
    return held


def holder_by_inode(inode: int, *, skip: Iterable[int], seconds: float) -> int | None:
    """The first process, of all, that has the socket INODE open; None when none is found
    within SECONDS (the search gives up rather than hold a unit's start). Only for when the
    socket's own cgroup has no process holding it: created by one process, held by another
    (Podman's conmon), or its cgroup gone."""
    deadline = time.monotonic() + seconds
    skipped = set(skip)
    try:
        entries = os.scandir("/proc")
    except OSError:
        return None
    with entries:
        for entry in entries:
            if time.monotonic() > deadline:
                return None
            if not entry.name.isdigit() or int(entry.name) in skipped:
                continue
            if _fd_of(inode, int(entry.name)) is not None:
                return int(entry.name)
    return None


_SYS_PIDFD_GETFD = 438  # the same number on every architecture (new syscalls share one table)


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """What the socket table does not show of a socket, yet decides what it blocks."""

    reuseaddr: bool
    reuseport: bool
    v6only: bool  # sock_diag reports it for listeners and unconnected sockets only


def options_of(inode: int, pid: int, fd: int | None = None) -> SocketOptions | None:
    """The options of the socket INODE, open in PID (as FD, when known); None when they
    cannot be read (the process is gone, or this is not root). They are read from a copy of
    the holder's descriptor (pidfd_getfd), which changes nothing for the holder."""
    fd = _fd_of(inode, pid) if fd is None else fd
    if fd is None:
        return None
    import ctypes  # noqa: PLC0415 - only on a busy port, and only for connections

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        copy = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    if copy < 0:
        return None
    try:
        with socket.socket(fileno=copy) as sock:
            v6only = sock.family == socket.AF_INET6 and sock.getsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_V6ONLY
            )
            return SocketOptions(
                reuseaddr=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)),
                reuseport=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)),
                v6only=bool(v6only),
            )
    except OSError:
        return None


def _fd_of(inode: int, pid: int) -> int | None:
    """PID's descriptor of the socket INODE, or None (not open there, or not ours to read)."""
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return int(fd)
        except OSError:
            continue
    return None


@contextmanager
def pidfds(pids: Iterable[int]) -> Iterator[list[int] | None]:
    """A pidfd for each of PIDS that can be opened (not ours to open: left out), closed
    afterwards; None when one has exited already."""
    descriptors: list[int] = []
    try:
        for pid in pids:
            try:
                descriptors.append(os.pidfd_open(pid))
            except ProcessLookupError:
                break
            except OSError:
                continue
        else:
            yield descriptors
            return
        yield None
    finally:
        for fd in descriptors:
            os.close(fd)


def wait_for_exit(pids: Iterable[int], seconds: float) -> None:
    """Return when one of PIDS exits or SECONDS pass: a pidfd each, woken by the kernel."""
    with pidfds(pids) as descriptors:
        if descriptors is None:
            return  # already gone: the caller looks again at once
        if not descriptors:
            # No pidfd to wait on (not ours to open): look again soon rather than at the end.
            time.sleep(max(0.0, min(seconds, BLIND_RETRY_SECONDS)))
            return
        poller = select.poll()
        for fd in descriptors:
            poller.register(fd, select.POLLIN)
        poller.poll(max(0, int(seconds * 1000)))


@functools.lru_cache(maxsize=1024)
def user_name(uid: int | None) -> str | None:
    """UID's login name; the number itself when the database knows no such user."""
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)

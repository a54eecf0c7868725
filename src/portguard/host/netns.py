"""Entering another network namespace, so the census sees the sockets bound there.

Ports are per network namespace: a service with PrivateNetwork= or NetworkNamespacePath=
binds in its own, invisible from the host's.
"""

import ctypes
import errno
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from portguard.errors import Denied, UsageError

_CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_T = TypeVar("_T")


def netns_path(target: str) -> str:
    """NAME (ip netns), a PID, or a path to a namespace file -> the file to open."""
    if target.isdigit():
        return f"/proc/{target}/ns/net"
    if target.startswith("/"):
        return target
    if not target or "/" in target or target in (".", ".."):
        raise UsageError(f"--netns {target!r}: expected a name from 'ip netns', a PID or a path")
    return f"{NETNS_DIR}/{target}"


def enter(target: str) -> str:
    """Move this process into TARGET's network namespace; returns the file entered."""
    path = netns_path(target)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"--netns {target}: no network namespace at {path}") from None
    except PermissionError:
        raise Denied(f"--netns {target}: {path} is not readable (run as root)") from None
    except OSError as exc:
        raise UsageError(f"--netns {target}: {path}: {exc.strerror}") from None
    try:
        _setns(fd)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise Denied(
                f"--netns {target}: entering a network namespace needs CAP_SYS_ADMIN (run as root)"
            ) from None
        if exc.errno == errno.EINVAL:
            raise UsageError(f"--netns {target}: {path} is not a network namespace") from None
        raise UsageError(f"--netns {target}: {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return path


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+; Debian 12 has 3.11
    if setns is not None:
        setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@dataclass(frozen=True, slots=True)
class Namespace:
    """Another network namespace: its inode, its `ip netns` name, and a process inside it."""

    inode: int
    name: str | None
    pid: int | None

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}" if self.name else f"/proc/{self.pid}/ns/net"


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def others(*, proc: str = "/proc") -> tuple[list[Namespace], int]:
    """Every network namespace but ours: the named ones (ip netns), then each distinct one a
    process is in; and how many processes' namespaces could not be read (not ours, unless
    root)."""
    ours = _inode(f"{proc}/self/ns/net")
    found: dict[int, Namespace] = {}
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        names = []
    for name in names:
        inode = _inode(f"{NETNS_DIR}/{name}")
        if inode is not None and inode != ours and inode not in found:
            found[inode] = Namespace(inode, name, None)
    unreadable = 0
    with os.scandir(proc) as entries:
        pids = sorted(int(e.name) for e in entries if e.name.isdigit())
    for pid in pids:
        inode = _inode(f"{proc}/{pid}/ns/net")
        if inode is None:
            unreadable += os.path.exists(f"{proc}/{pid}")
        elif inode != ours and inode not in found:
            found[inode] = Namespace(inode, None, pid)
    return list(found.values()), unreadable


def look_inside(
    namespaces: list[Namespace], look: Callable[[], _T], *, seconds: float
) -> tuple[list[tuple[Namespace, _T]], list[Namespace]]:
    """LOOK run inside each of NAMESPACES in turn, back in ours after each; within SECONDS.
    Returns what each look found, and the namespaces that could not be entered (or were
    not reached in time)."""
    seen: list[tuple[Namespace, _T]] = []
    missed: list[Namespace] = []
    deadline = time.monotonic() + seconds
    with _returning() as home:
        for namespace in namespaces:
            if time.monotonic() > deadline or not _enter(namespace.path):
                missed.append(namespace)
                continue
            try:
                seen.append((namespace, look()))
            except OSError:  # its sock_diag refused us: searched no more than not entered
                missed.append(namespace)
            finally:
                _setns(home)
    return seen, missed


@contextmanager
def _returning() -> Iterator[int]:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _enter(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        _setns(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True

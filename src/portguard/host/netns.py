"""Entering another network namespace, so the census sees the sockets bound there.

Ports are per network namespace: a service with PrivateNetwork= or NetworkNamespacePath=
binds in its own, invisible from the host's.
"""

import ctypes
import errno
import os

from portguard.errors import Denied, UsageError

_CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


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

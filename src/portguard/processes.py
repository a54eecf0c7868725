"""What /proc tells of a few known PIDs. Never a scan of every process."""

import os
import select
import time
from collections.abc import Iterable

BLIND_RETRY_SECONDS = 0.2


def read_text(path: str) -> str:
    """A small kernel file's text; empty when it cannot be read (gone, or not ours to read)."""
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def comm(pid: int) -> str | None:
    """The process's name (/proc/PID/comm), or None when it is gone."""
    return read_text(f"/proc/{pid}/comm").strip() or None


def holders_of(inode: int, candidates: Iterable[int]) -> list[int]:
    """Which of CANDIDATES has the socket INODE open (only fds we may read are looked at)."""
    target = f"socket:[{inode}]"
    holding = []
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    holding.append(pid)
                    break
            except OSError:
                continue
    return holding


def wait_for_exit(pids: Iterable[int], seconds: float) -> None:
    """Return when one of PIDS exits or SECONDS pass: a pidfd each, woken by the kernel."""
    descriptors: list[int] = []
    try:
        for pid in pids:
            try:
                descriptors.append(os.pidfd_open(pid))
            except ProcessLookupError:
                return  # already gone: the caller looks again at once
            except OSError:
                continue
        if not descriptors:
            # No pidfd to wait on (not ours to open): look again soon rather than at the end.
            time.sleep(max(0.0, min(seconds, BLIND_RETRY_SECONDS)))
            return
        poller = select.poll()
        for fd in descriptors:
            poller.register(fd, select.POLLIN)
        poller.poll(max(0, int(seconds * 1000)))
    finally:
        for fd in descriptors:
            os.close(fd)

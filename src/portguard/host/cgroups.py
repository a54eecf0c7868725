"""cgroup v2: a socket's cgroup id -> its cgroup path -> the unit it belongs to.

A cgroup's id is the inode number of its directory on the cgroup2 mount, so a walk of
that tree comparing inodes finds it without privileges and without reading /proc/PID.
"""

import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from portguard.host.processes import read_text
from portguard.registry.unitname import unit_name_problem

_UNIT_SUFFIXES = (".service", ".socket", ".scope")


def cgroup2_mount(mountinfo: str | None = None) -> Path | None:
    """Where the unified (v2) hierarchy is mounted: /sys/fs/cgroup, or .../unified on hybrid."""
    text = mountinfo if mountinfo is not None else read_text("/proc/self/mountinfo")
    found: list[Path] = []
    for line in text.splitlines():
        head, _, tail = line.partition(" - ")
        if tail.split(" ", 1)[0] == "cgroup2":
            found.append(Path(head.split()[4].replace("\\040", " ")))
    preferred = [p for p in found if p == Path("/sys/fs/cgroup")]
    candidates = preferred or found
    return candidates[0] if candidates else None


def own_cgroup(proc_self_cgroup: str | None = None) -> str | None:
    """This process's cgroup v2 path (`0::/system.slice/x.service`), relative to its namespace."""
    text = proc_self_cgroup if proc_self_cgroup is not None else read_text("/proc/self/cgroup")
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def cgroup_of(pid: int) -> str | None:
    """PID's cgroup v2 path, as our cgroup namespace sees it; None when it is gone."""
    return own_cgroup(read_text(f"/proc/{pid}/cgroup"))


def unit_of(path: str) -> str | None:
    """The innermost unit a cgroup path belongs to (slices are containers, not owners)."""
    for part in reversed(path.split("/")):
        if part.endswith(_UNIT_SUFFIXES) and unit_name_problem(part) is None:
            return part
    return None


def is_within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def paths_of_ids(ids: Iterable[int], mount: Path) -> dict[int, str]:
    """Cgroup paths (as `/system.slice/x.service`) for the ids found under MOUNT."""
    wanted = set(ids)
    found: dict[int, str] = {}
    if not wanted:
        return found
    queue: deque[tuple[str, str]] = deque([(str(mount), "/")])
    try:
        root_inode = os.stat(mount).st_ino
    except OSError:
        return found
    if root_inode in wanted:
        found[root_inode] = "/"
    while queue and len(found) < len(wanted):
        directory, relative = queue.popleft()
        for entry in subdirectories(directory):
            child = f"{relative.rstrip('/')}/{entry.name}"
            if entry.inode() in wanted:
                found[entry.inode()] = child
            queue.append((entry.path, child))
    return found


def subdirectories(directory: str | Path) -> Iterator[os.DirEntry[str]]:
    """The cgroups directly below DIRECTORY (none when it is gone or not ours to read)."""
    try:
        with os.scandir(directory) as entries:
            yield from [e for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:  # removed while we walked, or not ours to read
        return


def pids(path: str, mount: Path) -> list[int]:
    """Every process in the cgroup and below it; from cgroup.procs, never a scan of /proc."""
    result: list[int] = []
    top = mount / path.lstrip("/")
    for directory, _, _ in os.walk(top):
        text = read_text(os.path.join(directory, "cgroup.procs"))
        result.extend(int(p) for p in text.split())
    return result

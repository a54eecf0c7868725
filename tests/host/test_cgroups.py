"""cgroup v2: the mount, this process's cgroup, path -> unit, and cgroup id -> path (cgroups.py)."""

import os
import time
from pathlib import Path

import pytest

from portguard.host import cgroups

UNIFIED = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate
"""
HYBRID = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
LEGACY = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
"""
# Optional fields before the separator vary in number; a mount point may hold a space.
ODD = """\
50 22 0:40 / /mnt/cg\\040two rw,relatime shared:9 master:3 - cgroup2 none rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid shared:8 - cgroup2 cgroup2 rw
"""


@pytest.mark.parametrize(
    ("mountinfo", "mount"),
    [
        (UNIFIED, Path("/sys/fs/cgroup")),
        (HYBRID, Path("/sys/fs/cgroup/unified")),
        (LEGACY, None),
        ("", None),
        (ODD, Path("/sys/fs/cgroup")),  # the standard place wins over another mount
        (ODD.splitlines()[0], Path("/mnt/cg two")),
    ],
    ids=["unified", "hybrid", "legacy", "empty", "preferred", "escaped-space"],
)
def test_cgroup2_mount(mountinfo: str, mount: Path | None) -> None:
    assert cgroups.cgroup2_mount(mountinfo) == mount


def test_cgroup2_mount_of_this_host_is_a_cgroup2_filesystem() -> None:
    mount = cgroups.cgroup2_mount()
    assert mount is not None
    assert (mount / "cgroup.procs").exists()


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("0::/system.slice/myapp.service\n", "/system.slice/myapp.service"),
        ("0::/\n", "/"),
        ("0::\n", "/"),
        ("12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/x.service\n"
         "0::/system.slice/x.service\n", "/system.slice/x.service"),
        ("1:name=systemd:/system.slice/x.service\n", None),  # cgroup v1 only
        ("", None),
    ],
    ids=["unified", "root", "empty-path", "hybrid", "legacy", "none"],
)  # fmt: skip
def test_own_cgroup(text: str, path: str | None) -> None:
    assert cgroups.own_cgroup(text) == path


def test_own_cgroup_of_this_process() -> None:
    expected = [
        line[3:] or "/"
        for line in Path("/proc/self/cgroup").read_text().splitlines()
        if line.startswith("0::")
    ]
    assert cgroups.own_cgroup() == expected[0]


DOCKER_ID = "3f2a9c0b1d2e" + "ab" * 26


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("/system.slice/nginx.service", "nginx.service"),
        ("/system.slice/nginx.socket", "nginx.socket"),
        ("/system.slice/system-redis.slice/redis@6379.service", "redis@6379.service"),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "foo.service"),
        ("/user.slice/user-1000.slice/user@1000.service/init.scope", "init.scope"),
        ("/user.slice/user-1000.slice/user@1000.service", "user@1000.service"),
        ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
        (f"/system.slice/docker-{DOCKER_ID}.scope", f"docker-{DOCKER_ID}.scope"),
        (f"/machine.slice/libpod-{DOCKER_ID}.scope/container", f"libpod-{DOCKER_ID}.scope"),
        # Delegated subtrees: the service's own cgroups below it belong to the service.
        ("/system.slice/myapp.service/worker", "myapp.service"),
        ("/system.slice/myapp.service/payload/inner/leaf", "myapp.service"),
        ("/system.slice/containerd.service/k8s.io/abc", "containerd.service"),
        ("/system.slice/myapp.service/", "myapp.service"),
        ("/init.scope", "init.scope"),
        ("/system.slice", None),
        ("/user.slice/user-1000.slice", None),
        ("/", None),
        ("", None),
        ("/system.slice/not a unit.service", None),  # a space: no unit name
    ],
)
def test_unit_of(path: str, unit: str | None) -> None:
    assert cgroups.unit_of(path) == unit


@pytest.mark.parametrize(
    ("path", "ancestor", "within"),
    [
        ("/system.slice/a.service", "/system.slice/a.service", True),
        ("/system.slice/a.service/sub", "/system.slice/a.service", True),
        ("/system.slice/a.service/sub", "/system.slice/a.service/", True),
        ("/system.slice/a.service2", "/system.slice/a.service", False),
        ("/system.slice", "/system.slice/a.service", False),
        ("/anything", "/", True),
    ],
)
def test_is_within(path: str, ancestor: str, within: bool) -> None:
    assert cgroups.is_within(path, ancestor) is within


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A cgroup-like directory tree; its directories' inodes stand for cgroup ids."""
    for relative in (
        "system.slice/nginx.service",
        "system.slice/myapp.service/worker/inner",
        "user.slice/user-1000.slice/session-3.scope",
        "user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
    ):
        (tmp_path / relative).mkdir(parents=True)
    (tmp_path / "system.slice" / "cgroup.procs").write_text("")
    (tmp_path / "not-a-dir").write_text("")
    return tmp_path


def inode(path: Path) -> int:
    return os.stat(path).st_ino


def test_paths_of_ids_finds_each_by_its_inode(tree: Path) -> None:
    wanted = {
        inode(tree / "system.slice/nginx.service"): "/system.slice/nginx.service",
        inode(tree / "system.slice/myapp.service/worker/inner"):
            "/system.slice/myapp.service/worker/inner",
        inode(tree / "user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"):
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
        inode(tree): "/",
    }  # fmt: skip
    assert len(wanted) == 4  # four distinct inodes, or the test proves nothing
    assert cgroups.paths_of_ids(wanted, tree) == wanted


def test_paths_of_ids_leaves_out_ids_not_in_the_tree(tree: Path) -> None:
    session = inode(tree / "user.slice/user-1000.slice/session-3.scope")
    missing = max(inode(p) for p in tree.rglob("*")) + 1000
    assert cgroups.paths_of_ids({session, missing}, tree) == {
        session: "/user.slice/user-1000.slice/session-3.scope"
    }
    assert cgroups.paths_of_ids({inode(tree / "not-a-dir")}, tree) == {}  # files are no cgroups


def test_paths_of_ids_without_ids_or_mount(tree: Path) -> None:
    assert cgroups.paths_of_ids([], tree) == {}
    assert cgroups.paths_of_ids([inode(tree)], tree / "absent") == {}


def test_paths_of_ids_on_this_host_finds_our_own_cgroup() -> None:
    mount = cgroups.cgroup2_mount()
    own = cgroups.own_cgroup()
    assert mount is not None and own is not None
    cgroup_id = os.stat(mount / own.lstrip("/")).st_ino
    assert cgroups.paths_of_ids({cgroup_id}, mount) == {cgroup_id: own}


def test_pids_reads_cgroup_procs_of_the_cgroup_and_below(tree: Path) -> None:
    service = tree / "system.slice/myapp.service"
    (service / "cgroup.procs").write_text("")
    (service / "worker" / "cgroup.procs").write_text("101\n102\n")
    (service / "worker" / "inner" / "cgroup.procs").write_text("103\n")
    (tree / "system.slice/nginx.service/cgroup.procs").write_text("999\n")
    assert sorted(cgroups.pids("/system.slice/myapp.service", tree)) == [101, 102, 103]
    assert cgroups.pids("/system.slice/absent.service", tree) == []


def test_wait_for_exit_without_any_pidfd_looks_again_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No pidfd can be opened: the wait is a short retry, not the whole remaining budget."""
    from portguard.host import processes  # noqa: PLC0415

    def refuse(pid: int) -> int:
        raise PermissionError(1, "not permitted")

    monkeypatch.setattr(processes.os, "pidfd_open", refuse)
    began = time.monotonic()
    processes.wait_for_exit([os.getpid()], 5.0)
    assert time.monotonic() - began < 1.0

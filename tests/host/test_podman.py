"""Podman's evidence read from processes: conmon's arguments and the namespaces a rootless
forwarder serves. The command lines are recorded from podman 4.3 (Debian 12) and 5.4
(Debian 13) in the sandbox; tests/system/test_check_podman.py runs the real thing.
"""

import os
import subprocess
import sys

import pytest

from portguard.host import podman

ID = "26b461c53b0c2113bcbc2a95f774d9d1b7e77be7ab524ee8ec725fb97ca2a0be"


def test_conmon_says_which_container_it_holds_for() -> None:
    conmon = ("/usr/bin/conmon", "--api-version", "1", "-c", ID, "-u", ID, "-r", "/usr/bin/crun",
              "-n", "web", "--exit-dir", "/run/libpod/exits")  # fmt: skip
    assert podman.conmon_container(conmon) == (ID, "web")
    assert podman.conmon_container(("/usr/bin/python3", "-c", "x")) is None
    assert podman.conmon_container(("/usr/bin/conmon", "-c", ID)) is None  # no name: not ours


def test_the_forwarders_name_the_namespace_they_serve() -> None:
    pasta = ("/usr/bin/pasta", "--config-net", "-t", "18082-18082:80-80", "--netns",
             "/run/user/1001/netns/netns-2b1c", "--map-guest-addr", "169.254.1.2")  # fmt: skip
    slirp = ("/usr/bin/slirp4netns", "--disable-host-loopback", "--mtu=65520", "-c", "-e", "3",
             "--netns-type=path", "/run/user/1001/netns/netns-d1c5", "tap0")  # fmt: skip
    assert podman._namespace_paths(pasta) == ["/run/user/1001/netns/netns-2b1c"]
    assert podman._namespace_paths(slirp) == ["/run/user/1001/netns/netns-d1c5"]
    assert podman._namespace_paths(("rootlessport",)) == []


def test_a_forwarder_in_our_own_namespace_serves_none_by_itself() -> None:
    # pasta runs in the host's namespace: only what its arguments name counts, never its own.
    assert podman.served_namespaces([os.getpid()]) == set()
    assert podman.netns_inode("self") == os.stat("/proc/self/ns/net").st_ino


def test_a_forwarder_inside_another_namespace_serves_that_one() -> None:
    # rootlessport runs inside the container's namespace: that one is what it serves.
    if (
        subprocess.run(["unshare", "--net", "true"], check=False, capture_output=True).returncode
        != 0
    ):
        pytest.skip("creating a network namespace needs root (CI runs as root)")
    child = subprocess.Popen(["unshare", "--net", sys.executable, "-c",
                              "import time; time.sleep(30)"])  # fmt: skip
    try:
        inner = None
        for _ in range(200):
            inner = podman.netns_inode(child.pid)
            if inner != podman.netns_inode("self"):
                break
            subprocess.run(["sleep", "0.01"], check=False)
        assert inner is not None and inner != podman.netns_inode("self")
        assert podman.served_namespaces([child.pid]) == {inner}
    finally:
        child.kill()
        child.wait(timeout=10)

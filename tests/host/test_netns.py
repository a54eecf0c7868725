"""Entering another network namespace (netns.py). Only child processes ever enter one."""

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from portguard.errors import Exit, UsageError
from portguard.host.netns import enter, netns_path
from tests.conftest import SRC, SYSTEM_PYTHON
from tests.unprivileged import run_as

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="setns() needs CAP_SYS_ADMIN; without it every file is EPERM"
)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("blue", "/run/netns/blue"),
        ("4242", "/proc/4242/ns/net"),
        ("/var/run/netns/blue", "/var/run/netns/blue"),
        ("/proc/1/ns/net", "/proc/1/ns/net"),
    ],
)
def test_netns_path(target: str, path: str) -> None:
    assert netns_path(target) == path


@pytest.mark.parametrize("target", ["a/b", "..", ".", ""])
def test_netns_path_refuses_what_is_neither_name_pid_nor_path(target: str) -> None:
    with pytest.raises(UsageError) as raised:
        netns_path(target)
    assert raised.value.exit_code == 64  # EX_USAGE
    assert "expected a name from 'ip netns', a PID or a path" in raised.value.message


def test_enter_a_missing_namespace_names_the_path(tmp_path: Path) -> None:
    name = f"pgtest-absent-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UsageError) as raised:
        enter(name)
    assert raised.value.message == f"--netns {name}: no network namespace at /run/netns/{name}"
    absent = str(tmp_path / "absent")
    with pytest.raises(UsageError) as raised:
        enter(absent)
    assert raised.value.message.endswith(f": no network namespace at {absent}")


@needs_root
def test_enter_a_file_that_is_no_namespace(tmp_path: Path) -> None:
    # setns() refuses a regular file, so this cannot move the test process anywhere.
    regular = tmp_path / "not-a-namespace"
    regular.write_text("")
    with pytest.raises(UsageError) as raised:
        enter(str(regular))
    assert raised.value.message == f"--netns {regular}: {regular} is not a network namespace"
    assert raised.value.exit_code == Exit.USAGE


@needs_root
def test_enter_a_namespace_of_another_kind() -> None:
    # Entering our own UTS namespace as a network one fails; had it not, nothing would change.
    with pytest.raises(UsageError, match=r"/proc/self/ns/uts is not a network namespace$"):
        enter("/proc/self/ns/uts")


def run_child(
    script: str, *args: str, user: int | None = None, src: Path = SRC
) -> dict[str, object]:
    """Run SCRIPT in a new Python with portguard importable from SRC; it prints one JSON
    object. USER: the uid it runs as (then SRC must be readable by that user)."""
    if user is not None:
        result = run_as(user, [SYSTEM_PYTHON, "-c", script, *args], env={"PYTHONPATH": str(src)})
    else:
        result = subprocess.run(
            [sys.executable, "-c", script, *args],
            env={**os.environ, "PYTHONPATH": str(src)},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


ENTER_AND_BIND = """
import json, os, socket, sys
from portguard.host.netns import enter
port = int(sys.argv[2])
path = enter(sys.argv[1])
with socket.socket() as sock:
    sock.bind(("127.0.0.1", port))
    sock.listen()
print(json.dumps({"path": path, "netns": os.readlink("/proc/self/ns/net")}))
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh network namespace from `ip netns add`, deleted after the test."""
    name = f"pgtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True, timeout=30)


@needs_root
def test_a_child_enters_a_namespace_where_the_hosts_port_is_free(namespace: str) -> None:
    with socket.socket() as host:
        host.bind(("127.0.0.1", 0))
        host.listen()
        port = host.getsockname()[1]
        with socket.socket() as again, pytest.raises(OSError, match="in use"):
            again.bind(("127.0.0.1", port))  # the control: taken here
        child = run_child(ENTER_AND_BIND, namespace, str(port))
    path = f"/run/netns/{namespace}"
    assert child["path"] == path
    assert child["netns"] == f"net:[{os.stat(path).st_ino}]"
    assert child["netns"] != os.readlink("/proc/self/ns/net")


ENTER_AND_REPORT = """
import json, sys
from portguard.host.netns import enter
try:
    enter(sys.argv[1])
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "code": exc.exit_code, "message": str(exc)}))
else:
    print(json.dumps({"error": None}))
"""


@needs_root
def test_a_user_without_privilege_is_told_to_run_as_root(readable_src: Path) -> None:
    child = run_child(ENTER_AND_REPORT, "1", user=65534, src=readable_src)
    assert child["error"] == "Denied"
    assert child["code"] == Exit.NOPERM
    assert "(run as root)" in str(child["message"])

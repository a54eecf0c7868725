"""Seen 4, against the kernel: an outgoing connection that the kernel gave a registered port
from net.ipv4.ip_local_port_range. `check` names it as what it is and gives the fix that
keeps it from happening again, not "run ss to see the holder". In a network namespace of its
own, whose ephemeral range is one port, so the kernel's own choice is the registered port.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent.parent / "src"
PORT = 45123

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare(1) and ip(8) for a network namespace of its own",
)

SCENE = f"""
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = socket.create_server(("127.0.0.1", 8443))
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as handle:
    handle.write("{PORT} {PORT}")
client = socket.create_connection(("127.0.0.1", 8443))
assert client.getsockname()[1] == {PORT}, client.getsockname()
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as handle:
    handle.write("{PORT - 1000} {PORT + 1000}")
done = subprocess.run([sys.executable, "-m", "portguard", "check", "client.service",
                       "--registry", sys.argv[1], "--json"], capture_output=True, text=True)
print(done.returncode)
print(done.stdout)
"""


def test_a_registered_port_taken_by_an_outgoing_connection_is_named_with_its_fix(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"version: 1\nunits:\n  client.service: {{listen: ['{PORT}/tcp']}}\n")
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", SCENE, str(registry)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(SRC)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, _, data = done.stdout.partition("\n")
    report = json.loads(data)
    assert int(code) == 69
    assert report["state"] == "ESTAB"
    remedy = report["remedy"]
    assert "a client connection of " in remedy and "to 127.0.0.1:8443" in remedy
    assert f"took {PORT} from net.ipv4.ip_local_port_range" in remedy
    assert "portguard reserve --apply" in remedy and "portguard-reserve.service" in remedy

"""`portguard init` on a real host: services, a socket unit, a login session, a UDP client.

The registry it writes must pass `lint` and leave `audit` clean on the same host.
"""

from __future__ import annotations

import json
import re
import shlex

import yaml

from tests.system.guarded import PYTHON, listener, plain_unit, portguard, wait_listening
from tests.system.sandbox import Sandbox
from tests.unprivileged import login

# Two sockets of one process: 0.0.0.0 and a v6only [::], the pair a bare claim stands for.
PAIR = (
    "import socket, time; a = socket.socket(); a.bind(('0.0.0.0', 8443)); a.listen(); "
    "b = socket.socket(socket.AF_INET6); "
    "b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); "
    "b.bind(('::', 8443)); b.listen(); time.sleep(10**6)"
)
# A UDP socket on a port the kernel picked, as a resolver's query socket is.
CLIENT = (
    "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind(('0.0.0.0', 0)); print(s.getsockname()[1], flush=True); time.sleep(10**6)"
)
WEB_DESCRIPTION = "Web front end: 'quoted' # not a comment"


def service(sandbox: Sandbox, name: str, command: str, description: str) -> None:
    plain_unit(sandbox, name, f"[Unit]\nDescription={description}\n"
                              f"[Service]\nExecStart={command}\n")  # fmt: skip


def start_services(sandbox: Sandbox) -> None:
    service(sandbox, "web.service", listener("::", 8080), WEB_DESCRIPTION)
    service(sandbox, "local.service", listener("127.0.0.1", 9090), "Local metrics")
    service(sandbox, "dns.service", listener("0.0.0.0", 5353, proto="udp"), "DNS")
    service(sandbox, "pair.service", f"{PYTHON} -c {shlex.quote(PAIR)}", "Two sockets")
    service(sandbox, "client.service", f"{PYTHON} -c {shlex.quote(CLIENT)}", "A UDP client")
    service(sandbox, "legacy.service", "/bin/sleep infinity", "Legacy API")
    plain_unit(sandbox, "legacy.socket", "[Socket]\nListenStream=8000\n")
    sandbox.daemon_reload()
    for unit in ("web.service", "local.service", "dns.service", "pair.service",
                 "client.service", "legacy.socket"):  # fmt: skip
        assert sandbox.start(unit).active, unit
    for port, proto in ((8080, "tcp"), (9090, "tcp"), (5353, "udp"), (8443, "tcp"), (8000, "tcp")):
        wait_listening(sandbox, port, proto)


def start_session_listener(sandbox: Sandbox, port: int) -> str:
    """A listener started from alice's login session; the session scope's cgroup."""
    sandbox.run("useradd", "--create-home", "alice")
    program = listener("0.0.0.0", port).removeprefix(f"{PYTHON} -c ")
    # runuser -l opens a real PAM session: pam_systemd puts it in session-N.scope.
    sandbox.run(*login("alice", f"nohup {PYTHON} -c {program} >/dev/null 2>&1 &"))
    wait_listening(sandbox, port)
    shown = sandbox.run("ss", "-Htlnpe", f"sport = :{port}").stdout
    found = re.search(r"cgroup:(/user\.slice/user-\d+\.slice/(session-\w+\.scope))", shown)
    assert found, f"the listener is not in a login session's scope: {shown}"
    return found.group(2)


def client_port(sandbox: Sandbox) -> int:
    """The port the kernel gave client.service's UDP socket (inside the ephemeral range)."""
    shown = sandbox.run("ss", "-Hulnpe").stdout
    line = next(line for line in shown.splitlines() if "client.service" in line)
    port = int(line.split()[3].rpartition(":")[2])
    low, high = map(int, sandbox.read_file("/proc/sys/net/ipv4/ip_local_port_range").split())
    assert low <= port <= high, (port, low, high)
    return port


def test_init_registers_the_units_and_lint_and_audit_accept_it(sandbox: Sandbox) -> None:
    start_services(sandbox)
    scope = start_session_listener(sandbox, 7000)
    ephemeral = client_port(sandbox)
    # The socket unit holds its port for a service that has not started.
    assert sandbox.unit_properties("legacy.service", "ActiveState")["ActiveState"] == "inactive"

    result = portguard(sandbox, "init")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    text = result.stdout
    units = yaml.safe_load(text)["units"]
    assert units == {
        "dns.service": {"description": "DNS", "listen": ["0.0.0.0:5353/udp"]},
        "legacy.service": {"description": "Legacy API", "listen": ["8000/tcp"],
                           "via": ["legacy.socket"]},
        "local.service": {"description": "Local metrics", "listen": ["127.0.0.1:9090/tcp"]},
        "pair.service": {"description": "Two sockets", "listen": ["8443/tcp"]},
        "web.service": {"description": WEB_DESCRIPTION, "listen": ["8080/tcp"]},
    }  # fmt: skip
    assert yaml.safe_load(text)["defaults"] == {"mode": "warn"}
    session_line = re.compile(
        rf"^# 0\.0\.0\.0:7000/tcp: alice's login session {re.escape(scope)} "
        r"\(pid \d+ python3\) — not a unit, left out$",
        re.MULTILINE,
    )
    assert session_line.search(text), text
    assert str(ephemeral) not in text
    assert "# 1 UDP socket on ports of the ephemeral range" in text

    sandbox.write_file("/etc/portguard/registry.yaml", text)
    linted = portguard(sandbox, "lint")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "valid: 5 units in 1 file, 0 errors" in linted.stderr

    audited = portguard(sandbox, "audit", "--registry", "/etc/portguard", "--format", "json")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    claims = json.loads(audited.stdout)["claims"]
    assert sorted((c["unit"], c["claim"], c["status"]) for c in claims) == [
        ("dns.service", "0.0.0.0:5353/udp", "ok"),
        ("legacy.service", "8000/tcp", "ok"),
        ("local.service", "127.0.0.1:9090/tcp", "ok"),
        ("pair.service", "8443/tcp", "ok"),
        ("web.service", "8080/tcp", "ok"),
    ]
    # And the plain command, as the brief runs it.
    assert portguard(sandbox, "audit", "--registry", "/etc/portguard").returncode == 0

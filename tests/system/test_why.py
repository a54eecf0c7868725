"""`portguard why` against real units, sessions, namespaces and sockets in a real systemd."""

from __future__ import annotations

import json
import re
import shlex

from tests.system.guarded import (
    PORTGUARD_BIN,
    PYTHON,
    as_user,
    guard_start,
    install_portguard,
    listener,
    make_time_wait,
    plain_unit,
    portguard,
    wait_listening,
    write_registry,
)
from tests.system.sandbox import Sandbox, wait_for
from tests.system.test_check import registry_for
from tests.unprivileged import login

REGISTRY = """\
version: 1
units:
  api.service:
    listen: [8080/tcp]
    owner: payments-team
  dns.service:
    listen: [5353/udp]
"""


def start_service(sandbox: Sandbox, name: str, command: str, port: int, proto: str = "tcp") -> int:
    """Start a plain service holding PORT; its MainPID."""
    plain_unit(
        sandbox, name, f"[Unit]\nDescription=Squatter {name}\n[Service]\nExecStart={command}\n"
    )
    sandbox.daemon_reload()
    assert sandbox.start(name).active
    wait_listening(sandbox, port, proto)
    return int(sandbox.unit_properties(name, "MainPID")["MainPID"])


def rows(text: str, label: str) -> str:
    """The text of one labelled row and its continuation lines, joined."""
    found = re.search(rf"^{label} +(.*(?:\n {{11}}.*)*)", text, re.MULTILINE)
    assert found, f"no '{label}' row in:\n{text}"
    return " ".join(part.strip() for part in found.group(1).splitlines())


def test_service_holder_named_with_the_registered_owner_and_a_systemctl_fix(
    sandbox: Sandbox,
) -> None:
    write_registry(sandbox, REGISTRY)
    pid = start_service(sandbox, "web.service", listener("0.0.0.0", 8080), 8080)

    result = portguard(sandbox, "why", "8080")

    assert result.returncode == 1, result.stderr
    out = result.stdout
    headline = out.splitlines()[0]
    assert headline == (
        f"8080 is held by web.service (pid {pid} python3) — registered to api.service "
        "(payments-team)"
    )
    assert rows(out, "sockets") == "LISTEN 0.0.0.0:8080/tcp"
    process = rows(out, "process")
    assert process.startswith(f"pid {pid} {PYTHON} -c import socket")
    assert "user root · started 20" in process
    assert process.endswith("parent 1 systemd")
    assert rows(out, "unit") == 'web.service "Squatter web.service", active (running)'
    assert rows(out, "registry").startswith(
        "8080/tcp → api.service (payments-team)  [/etc/portguard/registry.yaml:4:14]"
    )
    fix = rows(out, "fix")
    assert "'systemctl stop web.service'" in fix
    assert "kill" not in out
    # Never signals: the holder is still there, the same process.
    assert sandbox.unit_properties("web.service", "MainPID")["MainPID"] == str(pid)

    data = json.loads(portguard(sandbox, "why", "8080", "--json").stdout)
    assert data["occupied"] is True
    assert data["exit_code"] == 1
    assert data["headline"] == headline
    [occupant] = data["occupants"]
    assert occupant["owner"]["kind"] == "service"
    assert occupant["owner"]["unit"] == "web.service"
    assert occupant["process"]["pid"] == pid
    assert occupant["process"]["user"] == "root"
    assert occupant["process"]["cmdline"][:2] == [PYTHON, "-c"]
    assert occupant["parent"]["pid"] == 1
    assert occupant["unit"]["active_state"] == "active"
    assert [(s["state"], s["address"], s["port"]) for s in occupant["sockets"]] == [
        ("LISTEN", "0.0.0.0", 8080)
    ]
    assert data["registry"] == [{
        "unit": "api.service", "claim": "8080/tcp", "team": "payments-team", "via": [],
        "pool": None, "location": "/etc/portguard/registry.yaml:4:14",
    }]  # fmt: skip
    assert data["fixes"] == [fix]


def test_socket_unit_is_named_with_the_service_it_starts(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "legacy.socket", "[Unit]\nDescription=Legacy API socket\n"
               "[Socket]\nListenStream=8081\n")  # fmt: skip
    plain_unit(sandbox, "legacy.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    sandbox.daemon_reload()
    assert sandbox.start("legacy.socket").active
    write_registry(sandbox, REGISTRY)

    result = portguard(sandbox, "why", "8081/tcp")

    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert out.splitlines()[0] == (
        "8081/tcp is held by socket unit legacy.socket (held by PID 1, which starts "
        "legacy.service) — not in the registry"
    )
    assert rows(out, "sockets") == "LISTEN [::]:8081/tcp"
    assert rows(out, "process").startswith("pid 1 /lib/systemd/systemd")
    assert rows(out, "unit") == (
        'legacy.socket "Legacy API socket", active (listening) a socket unit: PID 1 holds '
        "the port and starts legacy.service"
    )
    assert rows(out, "registry") == "no claim covers this port"
    assert "'systemctl stop legacy.socket legacy.service'" in rows(out, "fix")
    assert "'systemctl disable legacy.socket'" in rows(out, "fix")


def test_login_session_names_the_user(sandbox: Sandbox) -> None:
    write_registry(sandbox, REGISTRY)
    sandbox.run("useradd", "--create-home", "alice")
    program = listener("0.0.0.0", 8082).removeprefix(f"{PYTHON} -c ")
    sandbox.run(*login("alice", f"nohup {PYTHON} -c {program} >/dev/null 2>&1 &"))
    wait_listening(sandbox, 8082)

    result = portguard(sandbox, "why", "8082/tcp")

    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert re.match(
        r"8082/tcp is held by alice's login session session-(\w+)\.scope \(pid \d+ python3\) "
        "— not in the registry",
        out,
    ), out
    assert "user alice" in rows(out, "process")
    session = rows(out, "session")
    assert re.fullmatch(r"\w+ of alice since 20\S+ \S+ \(\d+ s ago\) \(runuser-l\)", session)
    fix = rows(out, "fix")
    assert "ask alice to stop the program" in fix
    assert "loginctl session-status" in fix


def test_udp_holder(sandbox: Sandbox) -> None:
    write_registry(sandbox, REGISTRY)
    start_service(sandbox, "mdns.service", listener("0.0.0.0", 5353, proto="udp"), 5353, "udp")

    udp = portguard(sandbox, "why", "5353/udp")
    tcp = portguard(sandbox, "why", "5353/tcp")

    assert udp.returncode == 1, udp.stderr
    assert udp.stdout.splitlines()[0].startswith("5353/udp is held by mdns.service (pid ")
    assert udp.stdout.splitlines()[0].endswith("— registered to dns.service")
    assert rows(udp.stdout, "sockets") == "UNCONN 0.0.0.0:5353/udp"
    assert tcp.returncode == 0, tcp.stdout
    assert tcp.stdout.startswith("5353/tcp is free in this network namespace — not in the registry")


def test_time_wait_counts_the_seconds_left(sandbox: Sandbox) -> None:
    make_time_wait(sandbox, 8083)

    result = portguard(sandbox, "why", "8083")

    assert result.returncode == 1, result.stderr
    found = re.match(
        r"8083 has 1 connection in TIME-WAIT, the last ends in (\d+) s — no registry",
        result.stdout.splitlines()[0],
    )
    assert found, result.stdout
    seconds = int(found.group(1))
    assert 1 <= seconds <= 60  # the kernel's TIME-WAIT is 60 s
    assert rows(result.stdout, "registry") == "no registry at /etc/portguard"
    fix = rows(result.stdout, "fix")
    assert fix.startswith((f"wait {seconds} s", f"wait {seconds - 1} s"))
    assert "SO_REUSEADDR" in fix
    data = json.loads(portguard(sandbox, "why", "8083", "--json").stdout)
    assert data["occupants"] == []
    assert data["time_wait"]["count"] == 1
    assert 1 <= data["time_wait"]["seconds_left"] <= seconds


def test_free_port_exits_zero(sandbox: Sandbox) -> None:
    write_registry(sandbox, REGISTRY)

    result = portguard(sandbox, "why", "8080/tcp")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "8080/tcp is free in this network namespace — registered to api.service (payments-team)"
    )
    assert "--netns" in rows(result.stdout, "fix")
    assert json.loads(portguard(sandbox, "why", "8080", "--json").stdout)["occupied"] is False


def test_address_narrows_to_what_collides(sandbox: Sandbox) -> None:
    start_service(sandbox, "local.service", listener("127.0.0.1", 8084), 8084)

    assert portguard(sandbox, "why", "8084", "--address", "127.0.0.1").returncode == 1
    assert portguard(sandbox, "why", "8084", "--address", "0.0.0.0").returncode == 1
    other = portguard(sandbox, "why", "8084/tcp", "--address", "127.0.0.2")
    assert other.returncode == 0, other.stdout
    assert other.stdout.startswith("127.0.0.2:8084/tcp is free")


def test_netns_looks_into_another_network_namespace(sandbox: Sandbox) -> None:
    sandbox.run("ip", "netns", "add", "blue")
    sandbox.run("ip", "-n", "blue", "link", "set", "lo", "up")
    sandbox.run("systemd-run", "--unit=blue-app.service",
                "--property=NetworkNamespacePath=/run/netns/blue",
                *shlex.split(listener("0.0.0.0", 8090)))  # fmt: skip
    pid = sandbox.unit_properties("blue-app.service", "MainPID")["MainPID"]
    wait_for(
        lambda: portguard(sandbox, "why", "8090/tcp", "--netns", "blue").returncode == 1 or None,
        timeout=10,
        what="the listener in netns blue",
    )

    here = portguard(sandbox, "why", "8090/tcp")
    assert here.returncode == 0, here.stdout
    assert here.stdout.splitlines()[0] == (
        f"8090/tcp is free here; held in netns blue by blue-app.service (pid {pid} python3) — "
        "no registry"
    )
    by_name = portguard(sandbox, "why", "8090/tcp", "--netns", "blue")
    assert by_name.stdout.splitlines()[0].startswith(
        f"8090/tcp is held in network namespace blue by blue-app.service (pid {pid} python3)"
    )
    by_pid = portguard(sandbox, "why", "8090/tcp", "--netns", pid)
    assert by_pid.returncode == 1
    assert f"blue-app.service (pid {pid} python3)" in by_pid.stdout.splitlines()[0]
    missing = portguard(sandbox, "why", "8090", "--netns", "green")
    assert missing.returncode == 64
    assert missing.stderr == "portguard: --netns green: no network namespace at /run/netns/green\n"


def test_free_here_says_where_else_the_port_is_bound(sandbox: Sandbox) -> None:
    """Issue 14: a port free on this host's stack but bound in a named namespace and in a
    PrivateNetwork= service's own: exit 0, and the text and JSON say where and by whom."""
    sandbox.run("ip", "netns", "add", "x")
    sandbox.run("systemd-run", "--unit=nsl.service", "--property=NetworkNamespacePath=/run/netns/x",
                *shlex.split(listener("0.0.0.0", 8095)))  # fmt: skip
    sandbox.run("systemd-run", "--unit=private.service", "--property=PrivateNetwork=yes",
                *shlex.split(listener("::", 8095)))  # fmt: skip
    named = sandbox.unit_properties("nsl.service", "MainPID")["MainPID"]
    private = sandbox.unit_properties("private.service", "MainPID")["MainPID"]
    for pid in (named, private):
        wait_for(lambda pid=pid: portguard(sandbox, "why", "8095", "--netns", pid).returncode == 1
                 or None, timeout=10, what=f"the listener of pid {pid}")  # fmt: skip

    here = portguard(sandbox, "why", "8095/tcp")
    assert here.returncode == 0, here.stdout + here.stderr
    assert here.stdout.splitlines()[0] == (
        f"8095/tcp is free here; held in netns x by nsl.service (pid {named} python3) and 1 more "
        "socket owner — no registry"
    )
    assert rows(here.stdout, "elsewhere") == (
        f"netns x: nsl.service (pid {named} python3) "
        f"the namespace of pid {private}: private.service (pid {private} python3)"
    )
    assert "does not block a bind here" in rows(here.stdout, "fix")
    data = json.loads(portguard(sandbox, "why", "8095/tcp", "--json").stdout)
    assert data["occupied"] is False and data["exit_code"] == 0
    assert [(e["namespace"], e["owner"]["unit"]) for e in data["elsewhere"]] == [
        ("netns x", "nsl.service"), (f"the namespace of pid {private}", "private.service"),
    ]  # fmt: skip
    # The kernel agrees: the host's stack has the port free, so a guarded claim of it starts.
    guarded = guard_start(sandbox, registry_for("myapp.service", "8095/tcp"),
                          exec_start=listener("0.0.0.0", 8095))  # fmt: skip
    assert guarded.result.active, guarded.result.status
    # Unprivileged, other namespaces cannot be entered: said so, never a false "nowhere".
    install_portguard(sandbox)
    nobody = as_user(sandbox, 65534, PORTGUARD_BIN, "why", "8096/tcp")
    assert nobody.returncode == 0, nobody.stdout + nobody.stderr
    assert "not searched (entering them needs root)" in rows(nobody.stdout, "unknown"), (
        nobody.stdout
    )


def test_template_claims_count_for_loaded_instances_only(sandbox: Sandbox) -> None:
    write_registry(sandbox, 'version: 1\nunits:\n  cache@.service:\n    listen: ["%i/tcp"]\n')
    command = listener("0.0.0.0", 0).replace(", 0))", ", %i))")  # the instance is the port
    plain_unit(sandbox, "cache@.service", f"[Service]\nExecStart={command}\n")
    sandbox.daemon_reload()

    # `%i` would match any port; with no instance loaded the port is nobody's.
    assert portguard(sandbox, "why", "6380/tcp").stdout.startswith(
        "6380/tcp is free in this network namespace — not in the registry"
    )
    assert sandbox.start("cache@6380.service").active
    wait_listening(sandbox, 6380)

    held = portguard(sandbox, "why", "6380/tcp")
    assert held.returncode == 1
    assert held.stdout.splitlines()[0].startswith("6380/tcp is held by cache@6380.service (pid ")
    assert held.stdout.splitlines()[0].endswith("its registered owner")
    assert rows(held.stdout, "fix") == (
        "nothing to fix: cache@6380.service holds it, as the registry says"
    )
    assert portguard(sandbox, "why", "6381/tcp").stdout.startswith(
        "6381/tcp is free in this network namespace — not in the registry"
    )


def test_a_listener_started_by_the_main_process_is_named_not_the_main_process(
    sandbox: Sandbox,
) -> None:
    # A wrapper script as MainPID, its child holding the port: the child is the holder.
    command = f"/bin/sh -c {shlex.quote(listener('0.0.0.0', 8080) + ' & wait')}"
    main_pid = start_service(sandbox, "wrapped.service", command, 8080)
    children = sandbox.run("pgrep", "-P", str(main_pid)).stdout.split()
    assert len(children) == 1, children

    out = portguard(sandbox, "why", "8080").stdout

    assert out.splitlines()[0].startswith(
        f"8080 is held by wrapped.service (pid {children[0]} python3)"
    )
    assert "also held by" not in out

"""How the guard runs (`ExecStartPre=+… check [--user U] [--caps C]`), measured against a real
systemd. Every guarded unit gets its drop-in from `portguard dropin`, so the text under test
is the one users get.

What systemd does (252, Debian 12), as these tests assert it:
- `+` and `!` run a command as root, and still in the unit's network namespace
  (PrivateNetwork= applies to every command of the unit, prefixed or not); no prefix runs it
  as the unit's User=;
- `+` lifts the exec sandbox (NoExecPaths=) and the address-family and /proc restrictions;
- so the guard runs as root with `+`, and takes on the service's identity for the probe
  alone: a privileged port the service may not bind is `denied` to the probe too.
"""

from __future__ import annotations

from tests.system.guarded import (
    Guarded,
    dropin,
    listener,
    plain_unit,
    start_guarded,
    wait_listening,
    write_registry,
)
from tests.system.sandbox import Sandbox, wait_for
from tests.system.test_check import guard_status, registry_for, squat

SLEEPER = "/bin/sleep infinity"


def dropin_conf(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.d/50-portguard.conf"


def guard(sandbox: Sandbox, unit: str) -> str:
    """`portguard dropin UNIT`, then a reload; the guard's line as written."""
    written = dropin(sandbox, unit)
    assert written.returncode == 0, written.stderr
    sandbox.daemon_reload()
    (line,) = [
        line for line in sandbox.read_file(dropin_conf(unit)).splitlines()
        if line.startswith("ExecStartPre=")
    ]  # fmt: skip
    return line


def failed(sandbox: Sandbox, unit: str) -> dict[str, str] | None:
    props = sandbox.unit_properties(unit, "ActiveState", "ExecMainStatus")
    return props if props["ActiveState"] == "failed" else None


def guarded_start(sandbox: Sandbox, unit: str, *, claim: str, service: str) -> Guarded:
    write_registry(sandbox, registry_for(unit, claim))
    plain_unit(sandbox, unit, service)
    guard(sandbox, unit)
    return start_guarded(sandbox, unit)


def test_as_nobody_a_held_port_names_the_owner_and_its_pid(sandbox: Sandbox) -> None:
    holder = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)

    started = guarded_start(
        sandbox,
        "myapp.service",
        claim="8080/tcp",
        service=f"[Service]\nUser=nobody\nExecStart={SLEEPER}\n",
    )

    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 69
    entry = started.entry
    assert entry["_UID"] == "0"  # the guard ran as root (`+`), the probe as nobody
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_KIND"] == "service"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert entry["PORTGUARD_OWNER_PID"] == str(holder)
    assert entry["PORTGUARD_OWNER_COMM"] == "python3"
    assert "PORTGUARD_UNKNOWN" not in entry


def test_as_nobody_a_free_privileged_port_is_denied(sandbox: Sandbox) -> None:
    service = f"[Service]\nUser=nobody\nExecStart={listener('0.0.0.0', 80)}\n"

    started = guarded_start(sandbox, "myapp.service", claim="80/tcp", service=service)

    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 77
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "denied"
    assert entry["PORTGUARD_PORT"] == "80"
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in str(entry["PORTGUARD_REMEDY"])
    assert sandbox.run("ss", "-Hltn", "sport = :80").stdout == ""  # nobody holds it
    # Without the guard the service itself is refused the bind: the verdict was the kernel's.
    plain_unit(sandbox, "bare.service", service)
    sandbox.daemon_reload()
    sandbox.start("bare.service")
    wait_for(lambda: failed(sandbox, "bare.service"), timeout=10, what="the bare service to fail")
    messages = [str(e.get("MESSAGE", "")) for e in sandbox.journal("bare.service")]
    assert "PermissionError: [Errno 13] Permission denied" in messages

    # The remedy the entry names works: a new drop-in mirrors the capability, and the guard
    # and then the service bind 80 as nobody.
    plain_unit(sandbox, "myapp.service", service + "AmbientCapabilities=CAP_NET_BIND_SERVICE\n")
    line = guard(sandbox, "myapp.service")
    assert line.endswith("check --user nobody --caps net_bind_service")
    sandbox.systemctl("reset-failed", "myapp.service")
    fixed = start_guarded(sandbox, "myapp.service")
    assert fixed.result.active, fixed.result.status
    assert fixed.entries == []
    assert guard_status(sandbox, "myapp.service") == 0
    wait_listening(sandbox, 80)


def test_private_network_unit_is_not_blocked_by_a_host_listener(sandbox: Sandbox) -> None:
    """systemd runs every command of the unit, `+` ones too, in its network namespace."""
    holder = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)

    started = guarded_start(
        sandbox,
        "myapp.service",
        claim="8080/tcp",
        service=f"[Service]\nPrivateNetwork=yes\nExecStart={listener('0.0.0.0', 8080)}\n",
    )

    assert started.result.active, started.result.status
    assert started.entries == []
    assert guard_status(sandbox, "myapp.service") == 0
    # The service bound 8080 in its own namespace: here the squatter still has it alone.
    here = sandbox.run("ss", "-Hltnp", "sport = :8080").stdout
    assert f"pid={holder}," in here
    assert len(here.splitlines()) == 1


MEASURE = "echo $(readlink /proc/self/ns/net) $(id -u) > /tmp/{name}"


def test_what_each_prefix_changes(sandbox: Sandbox) -> None:
    """The fact the design rests on: a prefix changes the user, never the network namespace."""
    commands = [("none", ""), ("plus", "+"), ("bang", "!")]
    lines = [f"ExecStartPre={p}/bin/sh -c '{MEASURE.format(name=n)}'" for n, p in commands]
    plain_unit(
        sandbox,
        "measure.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=nobody\nPrivateNetwork=yes\n"
        + "\n".join(lines)
        + f"\nExecStart=/bin/sh -c '{MEASURE.format(name='main')}'\n",
    )
    sandbox.daemon_reload()
    assert sandbox.start("measure.service").active

    seen = {
        name: sandbox.read_file(f"/tmp/{name}").split() for name, _ in [*commands, ("main", "")]
    }
    host_netns = sandbox.run("readlink", "/proc/1/ns/net").stdout.strip()
    main_netns, main_uid = seen["main"]
    assert main_netns != host_netns
    assert main_uid == "65534"
    assert seen["none"] == [main_netns, "65534"]
    assert seen["plus"] == [main_netns, "0"]
    assert seen["bang"] == [main_netns, "0"]


def test_a_bang_execstart_binds_as_root_and_the_guard_lets_it(sandbox: Sandbox) -> None:
    """chrony.service's shape: User=_chrony, ExecStart=!chronyd, which binds as root."""
    service = f"[Service]\nUser=nobody\nExecStart=!{listener('0.0.0.0', 323, proto='udp')}\n"

    started = guarded_start(sandbox, "myapp.service", claim="323/udp", service=service)

    assert started.result.active, started.result.status
    assert started.entries == []
    assert guard_status(sandbox, "myapp.service") == 0
    wait_listening(sandbox, 323, "udp")


def test_the_guard_runs_under_noexecpaths_without_loosening_it(sandbox: Sandbox) -> None:
    """redis-server.service's shape: NoExecPaths=/ with ExecPaths= for the daemon alone."""
    daemon = listener("0.0.0.0", 6379)
    service = (
        f"[Service]\nUser=nobody\nExecStart={daemon}\nNoExecPaths=/\n"
        "ExecPaths=/usr/bin/python3 /usr/lib /lib\nCapabilityBoundingSet=\nPrivateUsers=true\n"
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n"
    )

    started = guarded_start(sandbox, "myapp.service", claim="6379/tcp", service=service)

    assert started.result.active, started.result.status
    assert guard_status(sandbox, "myapp.service") == 0
    wait_listening(sandbox, 6379)
    # The service's own sandbox is as it was: it still cannot run what ExecPaths= leaves out.
    sandbox.write_file("/usr/local/bin/probe-exec", "#!/bin/sh\necho ran\n", mode=0o755)
    tried = sandbox.run(
        "systemd-run", "--wait", "--pipe", "-p", "NoExecPaths=/", "-p",
        "ExecPaths=/usr/bin/python3 /usr/lib /lib", "/usr/local/bin/probe-exec", check=False,
    )  # fmt: skip
    assert tried.returncode != 0 and "ran" not in tried.stdout


def test_restricted_address_families_no_longer_hide_the_owner(sandbox: Sandbox) -> None:
    """`+` lifts RestrictAddressFamilies= for the guard: sock_diag (AF_NETLINK) works."""
    squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)

    started = guarded_start(
        sandbox,
        "myapp.service",
        claim="8080/tcp",
        service=f"[Service]\nUser=nobody\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n"
        f"ProtectProc=invisible\nExecStart={SLEEPER}\n",
    )

    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 69
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert entry["PORTGUARD_OWNER_COMM"] == "python3"  # /proc is not hidden from it either


def test_a_restart_loop_ends_at_the_start_limit_and_the_journal_keeps_every_owner(
    sandbox: Sandbox,
) -> None:
    """Restart=always on a held port: the guard adds no Restart*/StartLimit* setting, so the
    loop ends at systemd's start limit. `systemctl status` then shows only the refused start
    (systemd's lines since the unit last left `inactive`, and the guard's status=69), so the
    owner is in `journalctl -u UNIT -t portguard`, once per attempt, which packaging/README.md
    points to.
    """
    squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    write_registry(sandbox, registry_for("myapp.service", "8080/tcp"))
    plain_unit(sandbox, "myapp.service",
               f"[Service]\nExecStart={SLEEPER}\nRestart=always\nRestartSec=100ms\n")  # fmt: skip
    guard(sandbox, "myapp.service")
    assert "Restart" not in sandbox.read_file(dropin_conf("myapp.service"))
    sandbox.run("systemctl", "start", "myapp.service", check=False)

    def gave_up() -> dict[str, str] | None:
        props = sandbox.unit_properties("myapp.service", "ActiveState", "NRestarts", "SubState")
        return props if props["ActiveState"] == "failed" and props["NRestarts"] == "5" else None

    wait_for(gave_up, timeout=30, what="the start limit")
    status = sandbox.run("systemctl", "status", "--no-pager", "myapp.service", check=False).stdout
    assert "Start request repeated too quickly" in status
    assert "status=69" in status
    entries = [
        e for e in sandbox.journal("myapp.service")
        if e.get("SYSLOG_IDENTIFIER") == "portguard" and e.get("PORTGUARD_VERDICT") == "held"
    ]  # fmt: skip
    assert len(entries) == 5  # the first start and four restarts; the fifth was refused
    assert {e["PORTGUARD_OWNER_UNIT"] for e in entries} == {"squatter.service"}

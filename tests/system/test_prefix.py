"""Why the guard's `ExecStartPre=` has no prefix (`+` or `!`), measured against real systemd.

Every guarded unit here gets its drop-in from `portguard dropin`, so the text under test is
the one users get. The prefix variants are that same file with `+` or `!` inserted.

What systemd does (252, Debian 12), as these tests assert it:
- no prefix: the guard runs as the unit's User=, in the unit's network namespace;
- `+` and `!`: the guard runs as root, and still in the unit's network namespace
  (PrivateNetwork= applies to every command of the unit, prefixed or not);
- so a prefix cannot change which namespace is probed, but it does lift User=: a privileged
  port then looks free to the guard and the service fails afterwards with EACCES.

What no prefix gives up, also asserted: the guard shares the unit's hardening, so
RestrictAddressFamilies= without AF_NETLINK hides the owner (the verdict stands) and
ProtectProc=invisible hides the owner's command.
"""

from __future__ import annotations

import pytest

from tests.system.guarded import (
    Guarded,
    install_portguard,
    listener,
    plain_unit,
    portguard,
    start_guarded,
    wait_listening,
    write_registry,
)
from tests.system.sandbox import Sandbox, wait_for
from tests.system.test_check import guard_status, registry_for, squat

SLEEPER = "/bin/sleep infinity"
NOBODY_UID = "65534"


def dropin_conf(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.d/50-portguard.conf"


def guard(sandbox: Sandbox, unit: str, *, prefix: str = "") -> None:
    """`portguard dropin UNIT`, then PREFIX put before the guard's command; then reload."""
    install_portguard(sandbox)
    written = portguard(sandbox, "dropin", unit)
    assert written.returncode == 0, written.stderr
    if prefix:
        path = dropin_conf(unit)
        text = sandbox.read_file(path)
        assert text.count("\nExecStartPre=/usr/bin/portguard check\n") == 1, text
        sandbox.write_file(path, text.replace("ExecStartPre=", f"ExecStartPre={prefix}"))
    sandbox.daemon_reload()


def guarded_start(
    sandbox: Sandbox, unit: str, *, claim: str, service: str, prefix: str = ""
) -> Guarded:
    write_registry(sandbox, registry_for(unit, claim))
    plain_unit(sandbox, unit, service)
    guard(sandbox, unit, prefix=prefix)
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
    assert entry["_UID"] == NOBODY_UID  # the guard ran as the unit's user
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_KIND"] == "service"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert entry["PORTGUARD_OWNER_PID"] == str(holder)  # MainPID over the system bus
    assert "PORTGUARD_UNKNOWN" not in entry


def test_as_nobody_a_free_privileged_port_is_denied(sandbox: Sandbox) -> None:
    service = f"[Service]\nUser=nobody\nExecStart={listener('0.0.0.0', 80)}\n"

    started = guarded_start(sandbox, "myapp.service", claim="80/tcp", service=service)

    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 77
    entry = started.entry
    assert entry["_UID"] == NOBODY_UID
    assert entry["PORTGUARD_VERDICT"] == "denied"
    assert entry["PORTGUARD_PORT"] == "80"
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in str(entry["PORTGUARD_REMEDY"])
    assert sandbox.run("ss", "-Hltn", "sport = :80").stdout == ""  # nobody holds it

    # The remedy the entry names works: the guard and then the service bind 80 as nobody.
    plain_unit(sandbox, "myapp.service", service + "AmbientCapabilities=CAP_NET_BIND_SERVICE\n")
    sandbox.daemon_reload()
    sandbox.systemctl("reset-failed", "myapp.service")
    fixed = start_guarded(sandbox, "myapp.service")
    assert fixed.result.active, fixed.result.status
    assert fixed.entries == []
    assert guard_status(sandbox, "myapp.service") == 0
    wait_listening(sandbox, 80)


@pytest.mark.parametrize("prefix", ["", "+", "!"])
def test_private_network_unit_is_not_blocked_by_a_host_listener(
    sandbox: Sandbox, prefix: str
) -> None:
    """With or without a prefix: systemd runs every command of the unit in its namespace."""
    holder = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)

    started = guarded_start(
        sandbox,
        "myapp.service",
        claim="8080/tcp",
        service=f"[Service]\nPrivateNetwork=yes\nExecStart={listener('0.0.0.0', 8080)}\n",
        prefix=prefix,
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
    """The fact the choice rests on: only the user changes, never the network namespace."""
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
    assert main_uid == NOBODY_UID
    assert seen["none"] == [main_netns, NOBODY_UID]
    assert seen["plus"] == [main_netns, "0"]
    assert seen["bang"] == [main_netns, "0"]


def failed(sandbox: Sandbox, unit: str) -> dict[str, str] | None:
    props = sandbox.unit_properties(unit, "ActiveState", "ExecMainStatus")
    return props if props["ActiveState"] == "failed" else None


@pytest.mark.parametrize("prefix", ["+", "!"])
def test_a_prefix_makes_a_privileged_port_look_free(sandbox: Sandbox, prefix: str) -> None:
    """`+` and `!` lift User=: the guard binds 80 as root and passes; the service then fails."""
    started = guarded_start(
        sandbox,
        "myapp.service",
        claim="80/tcp",
        service=f"[Service]\nUser=nobody\nExecStart={listener('0.0.0.0', 80)}\n",
        prefix=prefix,
    )

    assert started.entries == []  # the guard saw nothing wrong
    assert guard_status(sandbox, "myapp.service") == 0
    state = wait_for(lambda: failed(sandbox, "myapp.service"), timeout=10, what="myapp to fail")
    assert state["ExecMainStatus"] == "1"
    messages = [str(e.get("MESSAGE", "")) for e in sandbox.journal("myapp.service")]
    assert "PermissionError: [Errno 13] Permission denied" in messages


@pytest.mark.parametrize(
    ("prefix", "families", "named"),
    [
        ("", "AF_UNIX AF_INET AF_INET6", False),
        ("", "AF_UNIX AF_INET AF_INET6 AF_NETLINK", True),
        ("+", "AF_UNIX AF_INET AF_INET6", True),
    ],
)
def test_the_cost_restricted_address_families_hide_the_owner(
    sandbox: Sandbox, prefix: str, families: str, named: bool
) -> None:
    """What no prefix gives up: under RestrictAddressFamilies= without AF_NETLINK the guard
    cannot read the kernel's socket table. The verdict stands; the owner is unknown.
    """
    squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)

    started = guarded_start(
        sandbox,
        "myapp.service",
        claim="8080/tcp",
        service=f"[Service]\nUser=nobody\nRestrictAddressFamilies={families}\n"
        f"ExecStart={SLEEPER}\n",
        prefix=prefix,
    )

    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 69
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    if named:
        assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    else:
        assert "PORTGUARD_OWNER_UNIT" not in entry
        assert "socket table could not be read" in str(entry["PORTGUARD_UNKNOWN"])


def test_the_cost_protect_proc_hides_the_owners_command(sandbox: Sandbox) -> None:
    """ProtectProc=invisible hides other users' processes from the guard: the unit and PID
    are still named (cgroup, D-Bus), the holder's command is not.
    """
    holder = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)

    started = guarded_start(
        sandbox,
        "myapp.service",
        claim="8080/tcp",
        service=f"[Service]\nUser=nobody\nProtectProc=invisible\nExecStart={SLEEPER}\n",
    )

    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert entry["PORTGUARD_OWNER_PID"] == str(holder)
    assert "PORTGUARD_OWNER_COMM" not in entry

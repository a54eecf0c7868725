"""`portguard check` in ExecStartPre= of real units, in a real systemd, against the real kernel.

Each test asserts the unit's start result and the guard's journal entry field by field.
"""

from __future__ import annotations

import re
import shlex
import time

import pytest

from tests.system.guarded import (
    PYTHON,
    guard_start,
    guarded_unit,
    listener,
    make_time_wait,
    plain_unit,
    start_guarded,
    wait_listening,
    write_registry,
)
from tests.system.sandbox import Sandbox
from tests.unprivileged import login

SLEEPER = "/bin/sleep infinity"


def registry_for(unit: str, listen: str, **options: str) -> str:
    """A registry giving UNIT the LISTEN claims; OPTIONS are further keys of the unit."""
    lines = ["version: 1", "units:", f"  {unit}:", f"    listen: [{listen}]",
             "    owner: payments-team"]  # fmt: skip
    lines += [f"    {key}: {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def squat(
    sandbox: Sandbox, name: str, command: str, port: int, proto: str = "tcp", *, extra: str = ""
) -> int:
    """Start a plain service that holds PORT; returns its MainPID."""
    plain_unit(sandbox, name, f"[Service]\nExecStart={command}\n{extra}")
    sandbox.daemon_reload()
    assert sandbox.start(name).active
    wait_listening(sandbox, port, proto)
    return int(sandbox.unit_properties(name, "MainPID")["MainPID"])


def guard_status(sandbox: Sandbox, unit: str) -> int:
    """The exit status of the unit's last ExecStartPre= (the guard), as systemd recorded it."""
    # e.g. "{ path=/usr/bin/python3 ; argv[]=... ; pid=131 ; code=exited ; status=69 }"
    line = sandbox.unit_properties(unit, "ExecStartPre")["ExecStartPre"]
    found = re.search(r"\bstatus=(\d+)", line)
    assert found, line
    return int(found.group(1))


def test_free_port_starts_and_logs_nothing(sandbox: Sandbox) -> None:
    started = guard_start(
        sandbox, registry_for("myapp.service", "8080/tcp"), exec_start=listener("0.0.0.0", 8080)
    )
    assert started.result.active, started.result.status
    assert started.entries == []


def test_another_service_fails_the_start_at_once_and_is_named(sandbox: Sandbox) -> None:
    holder_pid = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    write_registry(sandbox, registry_for("myapp.service", "8080/tcp"))
    guarded_unit(sandbox, "myapp.service", exec_start=listener("0.0.0.0", 8080))
    sandbox.daemon_reload()

    started = start_guarded(sandbox, "myapp.service")

    assert started.result.elapsed < 1.0
    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 69
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["MESSAGE_ID"] == "d12e92fae08c4a5791aebc7c159078ed"
    assert entry["PRIORITY"] == "3"
    assert entry["PORTGUARD_UNIT"] == "myapp.service"
    assert entry["_SYSTEMD_UNIT"] == "myapp.service"
    assert entry["PORTGUARD_PORT"] == "8080"
    assert entry["PORTGUARD_PROTO"] == "tcp"
    assert entry["PORTGUARD_ADDRESS"] == "0.0.0.0"
    assert entry["PORTGUARD_STATE"] == "LISTEN"
    assert entry["PORTGUARD_OWNER_KIND"] == "service"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert entry["PORTGUARD_OWNER_PID"] == str(holder_pid)
    assert entry["PORTGUARD_OWNER_COMM"] == "python3"
    assert entry["PORTGUARD_OWNER_USER"] == "root"
    assert entry["PORTGUARD_REGISTERED_UNIT"] == "myapp.service"
    assert "systemctl stop squatter.service" in entry["PORTGUARD_REMEDY"]
    assert "kill" not in str(entry["PORTGUARD_REMEDY"])
    # The one-line summary on stderr is what `systemctl status` shows.
    assert "0.0.0.0:8080/tcp is held by squatter.service" in started.result.status
    # Nothing was signalled: the holder still runs, with the same PID.
    assert sandbox.unit_properties("squatter.service", "ActiveState", "MainPID") == {
        "ActiveState": "active",
        "MainPID": str(holder_pid),
    }
    # The clean fix works.
    sandbox.stop("squatter.service")
    assert sandbox.start("myapp.service").active


def test_a_transient_holder_is_stopped_never_disabled(sandbox: Sandbox) -> None:
    """`systemd-run --unit=adhoc` holds the port: a unit with no file to disable (rule 3)."""
    sandbox.run("systemd-run", "--unit=adhoc.service", *shlex.split(listener("0.0.0.0", 8080)))
    wait_listening(sandbox, 8080)
    assert (
        sandbox.run("test", "-f", "/run/systemd/transient/adhoc.service", check=False).returncode
        == 0
    )

    started = guard_start(sandbox, registry_for("myapp.service", "8080/tcp"))

    assert started.result.active_state == "failed"
    entry = started.entry
    assert entry["PORTGUARD_OWNER_UNIT"] == "adhoc.service"
    remedy = str(entry["PORTGUARD_REMEDY"])
    assert "'systemctl stop adhoc.service'" in remedy
    assert "a transient unit" in remedy
    assert "systemctl disable" not in remedy
    sandbox.stop("adhoc.service")


def test_socket_unit_held_by_pid1_is_named(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "legacy.socket", "[Socket]\nListenStream=8080\n")
    plain_unit(sandbox, "legacy.service", f"[Service]\nExecStart={SLEEPER}\n")
    sandbox.daemon_reload()
    assert sandbox.start("legacy.socket").active
    write_registry(sandbox, registry_for("myapp.service", "8080/tcp"))
    guarded_unit(sandbox, "myapp.service", exec_start=listener("0.0.0.0", 8080))
    sandbox.daemon_reload()

    started = start_guarded(sandbox, "myapp.service")

    assert started.result.active_state == "failed"
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_KIND"] == "socket"
    assert entry["PORTGUARD_OWNER_UNIT"] == "legacy.socket"
    assert entry["PORTGUARD_OWNER_PID"] == "1"
    assert entry["PORTGUARD_OWNER_COMM"] == "systemd"
    remedy = str(entry["PORTGUARD_REMEDY"])
    assert "systemctl stop legacy.socket" in remedy
    assert "systemctl disable legacy.socket" in remedy
    assert "legacy.service" in str(entry["MESSAGE"])  # the service it would activate


# (holder's bind, holder's v6only, the claim, whether the guarded unit must start)
ADDRESS_CASES = [
    ("::", False, "0.0.0.0:8080/tcp", False),  # a dual-stack [::] listener takes IPv4 too
    ("::", True, "0.0.0.0:8080/tcp", True),  # a v6only one does not
    ("127.0.0.1", None, "8080/tcp", False),  # one address blocks the wildcard claim
    ("127.0.0.1", None, "127.0.0.2:8080/tcp", True),  # ... but not another address
    ("::1", None, "127.0.0.1:8080/tcp", True),  # different families
    ("0.0.0.0", None, "127.0.0.1:8080/tcp", False),  # the wildcard blocks one address
]


@pytest.mark.parametrize(("host", "v6only", "claim", "starts"), ADDRESS_CASES)
def test_address_overlap_follows_the_kernel(
    sandbox: Sandbox, host: str, v6only: bool | None, claim: str, starts: bool
) -> None:
    squat(sandbox, "squatter.service", listener(host, 8080, v6only=v6only), 8080)
    started = guard_start(sandbox, registry_for("myapp.service", f'"{claim}"'))

    if starts:
        assert started.result.active, started.result.status
        assert started.entries == []
    else:
        assert started.result.active_state == "failed"
        assert started.entry["PORTGUARD_VERDICT"] == "held"
        assert started.entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"


@pytest.mark.parametrize(("claim", "starts"), [("5353/udp", False), ("5353/tcp", True)])
def test_udp_holder_blocks_udp_only(sandbox: Sandbox, claim: str, starts: bool) -> None:
    squat(sandbox, "mdns.service", listener("0.0.0.0", 5353, proto="udp"), 5353, "udp")
    started = guard_start(sandbox, registry_for("myapp.service", claim))

    if starts:
        assert started.result.active, started.result.status
    else:
        assert started.result.active_state == "failed"
        entry = started.entry
        assert entry["PORTGUARD_PROTO"] == "udp"
        assert entry["PORTGUARD_STATE"] == "UNCONN"
        assert entry["PORTGUARD_OWNER_UNIT"] == "mdns.service"


def test_template_instance_port(sandbox: Sandbox) -> None:
    squat(sandbox, "squatter.service", listener("0.0.0.0", 6380), 6380)
    write_registry(sandbox, registry_for("redis@.service", '"%i/tcp"'))
    guarded_unit(sandbox, "redis@.service", exec_start=SLEEPER)
    sandbox.daemon_reload()

    assert start_guarded(sandbox, "redis@6379.service").result.active
    held = start_guarded(sandbox, "redis@6380.service")
    assert held.result.active_state == "failed"
    assert held.entry["PORTGUARD_PORT"] == "6380"
    assert held.entry["PORTGUARD_UNIT"] == "redis@6380.service"


def test_login_session_process_names_the_user(sandbox: Sandbox) -> None:
    sandbox.run("useradd", "--create-home", "alice")
    program = listener("0.0.0.0", 8080).removeprefix(f"{PYTHON} -c ")
    # runuser -l opens a real PAM session: pam_systemd puts it in session-N.scope.
    sandbox.run(*login("alice", f"nohup {PYTHON} -c {program} >/dev/null 2>&1 &"))
    wait_listening(sandbox, 8080)
    started = guard_start(sandbox, registry_for("myapp.service", "8080/tcp"))

    assert started.result.active_state == "failed"
    entry = started.entry
    assert entry["PORTGUARD_OWNER_KIND"] == "session"
    assert entry["PORTGUARD_OWNER_USER"] == "alice"
    assert str(entry["PORTGUARD_OWNER_UNIT"]).startswith("session-")
    assert entry["PORTGUARD_OWNER_COMM"] == "python3"
    assert "alice" in str(entry["PORTGUARD_REMEDY"])


def leftover_service(linger: float) -> str:
    """ExecStart= whose listener is a child that outlives the main process by LINGER s.

    With KillMode=process, stopping the unit kills only the shell; the child keeps the port
    in the unit's own cgroup, as a previous instance still draining does.
    """
    child = (
        "import os, socket, time; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        "s.bind(('0.0.0.0', 8080)); s.listen(); parent = os.getppid(); "
        "exec('while os.getppid() == parent: time.sleep(0.02)'); "
        f"time.sleep({linger})"
    )
    return f"/bin/sh -c {shlex.quote(f'{PYTHON} -c {shlex.quote(child)} & wait')}"


LEFTOVER_CASES = [(1.0, "10s", "released"), (30.0, "2s", "drain-timeout")]


def leave_a_leftover(sandbox: Sandbox, linger: float, *, wait: str, extra: str = "") -> None:
    """myapp.service started and stopped, its child left holding 8080 for LINGER seconds."""
    write_registry(sandbox, registry_for("myapp.service", "8080/tcp", wait=wait))
    guarded_unit(sandbox, "myapp.service", exec_start=leftover_service(linger),
                 extra="KillMode=process\n" + extra)  # fmt: skip
    sandbox.daemon_reload()
    assert start_guarded(sandbox, "myapp.service").result.active
    wait_listening(sandbox, 8080)
    sandbox.stop("myapp.service")
    wait_listening(sandbox, 8080)  # the child still holds it


@pytest.mark.parametrize(("linger", "wait", "verdict"), LEFTOVER_CASES)
def test_own_leftover_process_is_waited_for(
    sandbox: Sandbox, linger: float, wait: str, verdict: str
) -> None:
    leave_a_leftover(sandbox, linger, wait=wait)
    began = time.monotonic()
    started = start_guarded(sandbox, "myapp.service")
    took = time.monotonic() - began

    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == verdict
    assert entry["PORTGUARD_OWNER_KIND"] == "self"
    assert entry["PORTGUARD_OWNER_UNIT"] == "myapp.service"
    waited = int(str(entry["PORTGUARD_WAITED_MS"]))
    if verdict == "released":
        assert started.result.active, started.result.status
        assert entry["PRIORITY"] == "6"
        assert 700 <= waited <= 3000, waited  # it lingered ~1 s after its parent died
    else:
        assert started.result.active_state == "failed"
        assert guard_status(sandbox, "myapp.service") == 75
        assert 1900 <= waited <= 3500, waited
        assert took < 2 + 2.5


def test_the_wait_stays_below_the_units_start_timeout(sandbox: Sandbox) -> None:
    """`wait: 60s`, but TimeoutStartSec=4s: the guard reads the start's timeout of its unit,
    which is starting (systemd is asked it of an activating unit only), and gives up at 3 s,
    so the verdict logged is the guard's (75), not systemd's timeout."""
    leave_a_leftover(sandbox, 30.0, wait="60s", extra="TimeoutStartSec=4s\n")
    started = start_guarded(sandbox, "myapp.service")
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "drain-timeout", entry
    assert guard_status(sandbox, "myapp.service") == 75
    waited = int(str(entry["PORTGUARD_WAITED_MS"]))
    assert 2500 <= waited <= 3900, waited  # 4 s less a second for systemd's own start


def test_time_wait_does_not_block_reuseaddr(sandbox: Sandbox) -> None:
    make_time_wait(sandbox, 8080)
    started = guard_start(sandbox, registry_for("myapp.service", "8080/tcp", reuseaddr="true"))
    assert started.result.active, started.result.status
    assert started.result.elapsed < 1.0
    assert started.entries == []


def test_time_wait_longer_than_the_budget_fails_at_once(sandbox: Sandbox) -> None:
    make_time_wait(sandbox, 8080)
    started = guard_start(
        sandbox, registry_for("myapp.service", "8080/tcp", reuseaddr="false", wait="5s")
    )

    assert started.result.active_state == "failed"
    assert started.result.elapsed < 1.5
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "drain-timeout"
    assert entry["PORTGUARD_OWNER_KIND"] == "time-wait"
    assert entry["PORTGUARD_STATE"] == "TIME-WAIT"
    # It names the seconds left: about 60 (the kernel's TIME-WAIT), more than the 5 s budget.
    message = str(entry["MESSAGE"])
    seconds = float(message.split("TIME-WAIT for ")[1].split("s more", maxsplit=1)[0])
    assert 50 <= seconds <= 60, message


def test_time_wait_within_the_budget_is_waited_out(sandbox: Sandbox) -> None:
    make_time_wait(sandbox, 8080)
    registry = registry_for("myapp.service", "8080/tcp", reuseaddr="false", wait="75s")
    started = guard_start(sandbox, registry, timeout=100)

    assert started.result.active, started.result.status
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "released"
    assert entry["PORTGUARD_OWNER_KIND"] == "time-wait"
    assert 45_000 <= int(str(entry["PORTGUARD_WAITED_MS"])) <= 62_000


def test_via_socket_unit_holding_the_port_lets_the_service_start(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "web.socket", "[Socket]\nListenStream=8080\n")
    write_registry(sandbox, registry_for("web.service", "8080/tcp", via="[web.socket]"))
    guarded_unit(sandbox, "web.service", exec_start=SLEEPER)
    sandbox.daemon_reload()
    assert sandbox.start("web.socket").active

    started = start_guarded(sandbox, "web.service")

    assert started.result.active, started.result.status
    assert started.entries == []


def test_unregistered_unit_starts_with_a_notice(sandbox: Sandbox) -> None:
    started = guard_start(sandbox, registry_for("other.service", "8080/tcp"))
    assert started.result.active, started.result.status
    assert started.entry["PORTGUARD_VERDICT"] == "unregistered"
    assert started.entry["PRIORITY"] == "5"


def test_broken_registry_fails_with_its_location(sandbox: Sandbox) -> None:
    sandbox.write_file(
        "/etc/portguard/registry.yaml",
        "version: 1\nunits:\n  myapp.service:\n    listen: [80800/tcp]\n",
    )
    guarded_unit(sandbox, "myapp.service", exec_start=SLEEPER)
    sandbox.daemon_reload()
    started = start_guarded(sandbox, "myapp.service")
    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 78
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "config-error"
    assert "/etc/portguard/registry.yaml:4:14" in str(entry["MESSAGE"])


def test_registry_writable_by_others_is_refused(sandbox: Sandbox) -> None:
    write_registry(sandbox, registry_for("myapp.service", "8080/tcp"))
    sandbox.run("chmod", "0666", "/etc/portguard/registry.yaml")
    guarded_unit(sandbox, "myapp.service", exec_start=SLEEPER)
    sandbox.daemon_reload()
    started = start_guarded(sandbox, "myapp.service")
    assert started.result.active_state == "failed"
    assert started.entry["PORTGUARD_VERDICT"] == "config-error"
    assert "not trusted (fix: chown root:root /etc/portguard/registry.yaml; chmod go-w" in str(
        started.entry["MESSAGE"]
    )


def test_address_not_on_this_host_is_unassignable(sandbox: Sandbox) -> None:
    # 192.0.2.1 is TEST-NET-1: never configured here, and binding sends nothing anywhere.
    started = guard_start(sandbox, registry_for("myapp.service", '"192.0.2.1:8080/tcp"'))
    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 68
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "unassignable"
    assert entry["PORTGUARD_ADDRESS"] == "192.0.2.1"


def test_privileged_port_as_nobody_is_denied_not_held(sandbox: Sandbox) -> None:
    squat(sandbox, "squatter.service", listener("0.0.0.0", 80), 80)
    started = guard_start(sandbox, registry_for("myapp.service", "80/tcp"), extra="User=nobody\n")
    assert started.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 77
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "denied"
    assert "CAP_NET_BIND_SERVICE" in str(entry["PORTGUARD_REMEDY"])


def test_private_network_unit_is_not_blocked_by_a_host_listener(sandbox: Sandbox) -> None:
    squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    started = guard_start(
        sandbox,
        registry_for("myapp.service", "8080/tcp"),
        exec_start=listener("0.0.0.0", 8080),
        extra="PrivateNetwork=yes\n",
    )
    assert started.result.active, started.result.status
    assert started.entries == []


def test_unprivileged_user_still_names_the_owner(sandbox: Sandbox) -> None:
    holder_pid = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    started = guard_start(sandbox, registry_for("myapp.service", "8080/tcp"), extra="User=nobody\n")
    assert started.result.active_state == "failed"
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_KIND"] == "service"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    # The system bus answers an unprivileged caller, so MainPID is still known.
    assert entry["PORTGUARD_OWNER_PID"] == str(holder_pid)


def test_bus_stopped_verdict_still_arrives(sandbox: Sandbox) -> None:
    squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    sandbox.run("systemctl", "stop", "dbus.socket", "dbus.service")
    # As nobody the guard has only the system bus (root would use systemd's private one).
    started = guard_start(sandbox, registry_for("myapp.service", "8080/tcp"),
                          extra="User=nobody\n")  # fmt: skip
    assert started.result.active_state == "failed"
    assert started.result.elapsed < 10 + 2
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"  # from the cgroup, no bus needed
    assert "D-Bus" in str(entry["PORTGUARD_UNKNOWN"])


def test_bus_hung_verdict_arrives_within_budget(sandbox: Sandbox) -> None:
    squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    # A frozen dbus-daemon: the kernel still accepts connections, nobody ever answers.
    sandbox.run("systemctl", "kill", "--signal=SIGSTOP", "dbus.service")
    write_registry(sandbox, registry_for("myapp.service", "8080/tcp", wait="3s"))
    guarded_unit(sandbox, "myapp.service", exec_start=SLEEPER, extra="User=nobody\n")
    sandbox.daemon_reload()
    try:
        started = start_guarded(sandbox, "myapp.service")
    finally:
        sandbox.run("systemctl", "kill", "--signal=SIGCONT", "dbus.service")
    assert started.result.active_state == "failed"
    assert started.result.elapsed < 3 + 2
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert "did not answer" in str(entry["PORTGUARD_UNKNOWN"])


def test_guard_as_root_uses_systemds_private_bus(sandbox: Sandbox) -> None:
    """Early in boot there is no dbus-daemon; root still learns MainPID from PID 1."""
    holder_pid = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    sandbox.run("systemctl", "stop", "dbus.socket", "dbus.service")
    started = guard_start(sandbox, registry_for("myapp.service", "8080/tcp"))
    assert started.entry["PORTGUARD_OWNER_PID"] == str(holder_pid)
    assert "PORTGUARD_UNKNOWN" not in started.entry


HOLDER_RECORDING_SIGNALS = """\
import signal, socket, time
got = []
for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT):
    signal.signal(number, lambda n, frame: got.append(n))
s = socket.socket()
s.bind(("0.0.0.0", 8080))
s.listen()
while True:
    time.sleep(0.05)
    with open("/run/holder-signals", "w") as out:
        out.write(repr(got))
"""


def test_check_never_signals_the_holder(sandbox: Sandbox) -> None:
    """The holder sees no signal during a guard run (SIGKILL/SIGSTOP would end or freeze it)."""
    sandbox.write_file("/run/holder.py", HOLDER_RECORDING_SIGNALS)
    # It ignores SIGTERM by design, so the sandbox's shutdown must not wait for it.
    squat(
        sandbox, "squatter.service", f"{PYTHON} /run/holder.py", 8080, extra="KillSignal=SIGKILL\n"
    )
    started = guard_start(sandbox, registry_for("myapp.service", "8080/tcp"))
    assert started.result.active_state == "failed"
    time.sleep(0.2)
    assert sandbox.read_file("/run/holder-signals") == "[]"
    assert sandbox.unit_properties("squatter.service", "ActiveState")["ActiveState"] == "active"

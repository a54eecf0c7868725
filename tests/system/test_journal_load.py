"""No verdict is lost under load: 50 guarded units started at once, some held, some free, in
several rounds, and `journalctl -u UNIT` finds every held unit's verdict entry.

journald attributes a datagram to a unit by reading the sender's cgroup from /proc when it
gets to the datagram; a guard that has exited by then leaves an entry without
_SYSTEMD_UNIT (systemd issue 2913). The guard runs as root (`+`) and names the unit in
OBJECT_SYSTEMD_UNIT, which `journalctl -u` matches for root's entries whatever the cgroup.
"""

from __future__ import annotations

import json
import shlex

from tests.system.guarded import PYTHON, dropin, plain_unit, wait_listening, write_registry
from tests.system.sandbox import Sandbox, wait_for

UNITS = 50
HELD = range(0, UNITS, 3)  # every third unit's port is held
FIRST_PORT = 21000
ROUNDS = 3


def unit(i: int) -> str:
    return f"load{i:02d}.service"


def squatter_command(ports: list[int]) -> str:
    """One process listening on every port of PORTS (one line: a unit file's ExecStart=)."""
    program = (
        f"import socket, time; socks = [socket.socket() for _ in {ports!r}]; "
        f"[s.bind(('0.0.0.0', p)) or s.listen() for s, p in zip(socks, {ports!r})]; "
        "time.sleep(10**6)"
    )
    return f"{PYTHON} -c {shlex.quote(program)}"


def settled(sandbox: Sandbox) -> dict[str, str] | None:
    states = {}
    for i in range(UNITS):
        state = sandbox.unit_properties(unit(i), "ActiveState")["ActiveState"]
        if state not in ("active", "failed"):
            return None
        states[unit(i)] = state
    return states


def test_fifty_units_at_once_every_held_verdict_is_found_for_its_unit(sandbox: Sandbox) -> None:
    held_ports = [FIRST_PORT + i for i in HELD]
    plain_unit(
        sandbox, "squatter.service", f"[Service]\nExecStart={squatter_command(held_ports)}\n"
    )
    lines = ["version: 1", "units:"]
    for i in range(UNITS):
        lines += [f"  {unit(i)}:", f"    listen: [{FIRST_PORT + i}/tcp]"]
        plain_unit(sandbox, unit(i), "[Service]\nExecStart=/bin/sleep infinity\n")
    write_registry(sandbox, "\n".join(lines) + "\n")
    written = dropin(sandbox, *(unit(i) for i in range(UNITS)))
    assert written.returncode == 0, written.stderr
    sandbox.daemon_reload()
    assert sandbox.start("squatter.service").active
    wait_listening(sandbox, held_ports[-1])

    unattributed = 0
    for round_ in range(1, ROUNDS + 1):
        sandbox.run("systemctl", "start", "--no-block", *(unit(i) for i in range(UNITS)))
        states = wait_for(lambda: settled(sandbox), timeout=120, what="every unit settled")
        assert {u for u, s in states.items() if s == "failed"} == {unit(i) for i in HELD}
        sandbox.run("journalctl", "--sync")
        for i in HELD:
            # `journalctl -u` as the operator types it, over the whole boot: one held verdict
            # per round so far.
            shown = sandbox.run("journalctl", "-u", unit(i), "-o", "json", "--no-pager",
                                "PORTGUARD_VERDICT=held").stdout  # fmt: skip
            entries = [json.loads(line) for line in shown.splitlines() if line.strip()]
            assert len(entries) == round_, (round_, unit(i), entries)
            unattributed += sum("_SYSTEMD_UNIT" not in e for e in entries[-1:])
        sandbox.run("systemctl", "stop", *(unit(i) for i in range(UNITS)), check=False,
                    timeout=120)  # fmt: skip
        sandbox.run("systemctl", "reset-failed", check=False)
    # How often journald lost the sender's unit (found all the same through the field above).
    print(
        f"journal load: {ROUNDS} rounds x {len(HELD)} held units, {unattributed} entries "
        "without _SYSTEMD_UNIT, every one found by journalctl -u"
    )

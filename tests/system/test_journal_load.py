"""No verdict is lost under load: 50 and 200 guarded units started at once, every third one
held, in rounds, and every held unit's verdict is in the journal as one structured entry
(MESSAGE_ID and the PORTGUARD_* fields), or, only where journald could not take it within the
send's bound, as a stderr line that says the structured entry was lost.

Issue 24 saw 16 structured entries for 17 held units, in every round. Measured (instrumented
send, 50 and 200 units): every send succeeded, within 29 ms; the 17th entry was in the journal
with all its fields. The query lost it: `journalctl --after-cursor=C FIELD=VALUE` on systemd
252 (Debian 12) skips the first matching entry after the cursor (systemd issue 30288, fixed in
255). Entries here are read after the cursor unfiltered and matched in Python (as
`Sandbox.journal` does).

The raced round makes the other race certain: journald is stopped while the units fail, so
every guard exits before journald reads its entry. Its datagrams wait in journald's socket
queue (net.unix.max_dgram_qlen, which PID 1 raises to 512), and arrive once journald reads again,
attributed to no unit: `journalctl -u` still finds them by OBJECT_SYSTEMD_UNIT, which journald
honours for root's entries (the guard runs as root, `+`), so no stderr copy is written (issue
13). With 200 units PID 1's own messages about them fill that queue, and a guard's send gives
up after its 1 s bound: only then does its stderr line (a stream systemd attributes itself)
carry the verdict, saying that the structured entry was lost.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass

import pytest

from portguard.commands.check import LOST
from portguard.policy.report import MESSAGE_ID, Verdict
from tests.system.guarded import PYTHON, dropin, plain_unit, wait_listening, write_registry
from tests.system.sandbox import JournalEntry, Sandbox, wait_for

FIRST_PORT = 21000
SQUATTER = "squatter.service"
# The round before the raced one follows a registry change: the first guard compiles it anew.
ROUNDS = ("plain", "after a registry change", "raced")


def unit(i: int) -> str:
    return f"load{i:03d}.service"


def squatter_command(ports: list[int]) -> str:
    """One process listening on every port of PORTS (one line: a unit file's ExecStart=)."""
    program = (
        f"import socket, time; socks = [socket.socket() for _ in {ports!r}]; "
        f"[s.bind(('0.0.0.0', p)) or s.listen() for s, p in zip(socks, {ports!r})]; "
        "time.sleep(10**6)"
    )
    return f"{PYTHON} -c {shlex.quote(program)}"


def registry(units: int, note: str = "") -> str:
    lines = ["version: 1", f"# {note}", "units:"]
    for i in range(units):
        lines += [f"  {unit(i)}:", f"    listen: [{FIRST_PORT + i}/tcp]"]
    return "\n".join(lines) + "\n"


def settled(sandbox: Sandbox, units: list[str]) -> dict[str, str] | None:
    shown = sandbox.run("systemctl", "show", "-p", "Id,ActiveState", "--", *units).stdout
    states = {}
    for block in shown.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines())
        if props["ActiveState"] not in ("active", "failed"):
            return None
        states[props["Id"]] = props["ActiveState"]
    return states


@dataclass
class Found:
    """A held unit's guard entries of one round."""

    structured: list[JournalEntry]
    lost: list[JournalEntry]  # stderr lines that say the structured entry was lost


def guard_entries(entries: list[JournalEntry], units: set[str]) -> dict[str, Found]:
    found = {u: Found([], []) for u in units}
    for entry in entries:
        if entry.get("MESSAGE_ID") == MESSAGE_ID[Verdict.HELD]:
            name = str(entry.get("PORTGUARD_UNIT"))
            if name in found:
                found[name].structured.append(entry)
        elif entry.get("_TRANSPORT") == "stdout" and LOST in str(entry.get("MESSAGE")):
            name = str(entry.get("_SYSTEMD_UNIT"))
            if name in found:
                found[name].lost.append(entry)
    return found


def stop_journald(sandbox: Sandbox) -> str:
    """SIGSTOP journald, so every guard exits before journald reads its entry (SIGCONT after)."""
    pid = sandbox.unit_properties("systemd-journald.service", "MainPID")["MainPID"]
    assert pid not in ("", "0"), "journald is not running"
    sandbox.run("kill", "-STOP", pid)
    return pid


@pytest.mark.parametrize("units", [50, 200])
def test_every_held_verdict_is_one_structured_entry_under_a_boot_storm(
    sandbox: Sandbox, units: int
) -> None:
    names = [unit(i) for i in range(units)]
    held = {unit(i): FIRST_PORT + i for i in range(0, units, 3)}
    plain_unit(sandbox, SQUATTER, f"[Service]\nExecStart={squatter_command([*held.values()])}\n")
    for name in names:
        plain_unit(sandbox, name, "[Service]\nExecStart=/bin/sleep infinity\n")
    write_registry(sandbox, registry(units))
    written = dropin(sandbox, *names)
    assert written.returncode == 0, written.stderr
    sandbox.daemon_reload()
    assert sandbox.start(SQUATTER).active
    wait_listening(sandbox, max(held.values()))

    summary = []
    for round_ in ROUNDS:
        if round_ == "after a registry change":
            write_registry(sandbox, registry(units, note="changed"))
        cursor = sandbox.journal_cursor()
        journald = stop_journald(sandbox) if round_ == "raced" else None
        try:
            sandbox.run("systemctl", "start", "--no-block", "--", *names)
            states = wait_for(lambda: settled(sandbox, names), timeout=180,
                              what="every unit settled")  # fmt: skip
        finally:
            if journald:
                sandbox.run("kill", "-CONT", journald)
        assert {u for u, s in states.items() if s == "failed"} == set(held)

        found = guard_entries(sandbox.journal(since_cursor=cursor), set(held))
        for name, port in held.items():
            kept = found[name]
            assert len(kept.structured) + len(kept.lost) == 1, (round_, name, kept)
            for entry in kept.structured:
                assert entry["PORTGUARD_VERDICT"] == "held", entry
                assert entry["PORTGUARD_PORT"] == str(port), entry
                assert entry["PORTGUARD_OWNER_UNIT"] == SQUATTER, entry
                assert entry["PRIORITY"] == "3", entry
            for entry in kept.lost:
                # Only a send that journald did not take within the bound is lost.
                assert str(entry["MESSAGE"]).endswith(
                    f"[{LOST} (journald took nothing for 1 s)]"
                ), entry
        lost = sum(len(f.lost) for f in found.values())
        unattributed = sum("_SYSTEMD_UNIT" not in e for f in found.values() for e in f.structured)
        summary.append(f"{round_}: {len(held) - lost} structured, {lost} lost, "
                       f"{unattributed} without _SYSTEMD_UNIT")  # fmt: skip
        if round_ != "raced":
            assert lost == 0, summary[-1]
        else:
            # The race must really have happened, or the round proved nothing.
            assert unattributed >= (len(held) - lost) // 2, summary[-1]
        operator_view(sandbox, held, rounds=ROUNDS.index(round_) + 1)

        sandbox.run("systemctl", "stop", "--", *names, check=False, timeout=180)
        sandbox.run("systemctl", "reset-failed", check=False)
    print(f"journal load, {units} units, {len(held)} held: " + "; ".join(summary))


def operator_view(sandbox: Sandbox, held: dict[str, int], *, rounds: int) -> None:
    """`journalctl -u UNIT -t portguard` as the operator types it, over the whole boot: one
    line of the guard per round so far, structured or saying it was lost; never both."""
    for name in held:
        shown = sandbox.run("journalctl", "-u", name, "-t", "portguard", "-o", "json",
                            "--no-pager").stdout  # fmt: skip
        entries = [json.loads(line) for line in shown.splitlines() if line.strip()]
        kinds = Counter(
            "structured" if e.get("PORTGUARD_VERDICT") == "held"
            else "lost" if LOST in str(e.get("MESSAGE")) else "other"
            for e in entries
        )  # fmt: skip
        assert kinds["other"] == 0, (name, entries)
        assert kinds["structured"] + kinds["lost"] == rounds, (name, entries)

"""The journal catalog installed in a real systemd: `journalctl -xeu UNIT` explains a failed
guarded start with the entry's text, filled in with the failure's own values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.guarded import guard_start, listener, make_time_wait
from tests.system.sandbox import Sandbox
from tests.system.test_check import guard_status, registry_for, squat

CATALOG = Path(__file__).resolve().parents[2] / "systemd" / "portguard.catalog"
UNIT = "myapp.service"


@pytest.fixture
def catalogued(sandbox: Sandbox) -> Sandbox:
    """The sandbox with portguard's catalog installed and compiled, as the package does."""
    sandbox.write_file("/usr/lib/systemd/catalog/portguard.catalog", CATALOG.read_text())
    sandbox.run("journalctl", "--update-catalog")
    listed = sandbox.run("journalctl", "--list-catalog").stdout
    assert "d12e92fae08c4a5791aebc7c159078ed portguard: " in listed
    return sandbox


# journalctl marks catalog lines with "░░ " in a UTF-8 locale (systemd >= 246), else "-- ".
CATALOG_MARKS = ("\N{LIGHT SHADE}\N{LIGHT SHADE}", "--")


def explained(sandbox: Sandbox, unit: str) -> list[str]:
    """The catalog lines `journalctl -xeu UNIT` shows, without their mark."""
    sandbox.run("journalctl", "--sync")
    shown = sandbox.run("journalctl", "-xe", "-u", unit, "--no-pager").stdout
    return [line[2:].strip() for line in shown.splitlines() if line.startswith(CATALOG_MARKS)]


def test_held_is_explained_with_the_port_and_the_holders_fix(catalogued: Sandbox) -> None:
    squat(catalogued, "squatter.service", listener("0.0.0.0", 8080), 8080)
    started = guard_start(catalogued, registry_for(UNIT, "8080/tcp"))
    assert started.result.active_state == "failed"
    assert started.entry["PORTGUARD_VERDICT"] == "held"

    lines = explained(catalogued, UNIT)
    text = "\n".join(lines)
    assert f"Subject: {UNIT} not started: port 8080/tcp is held by another owner" in lines
    assert "Defined-By: portguard" in lines
    assert "Documentation: man:portguard(8)" in lines
    assert "something else holds it on 0.0.0.0, so the service would fail with" in text
    # The remedy field, naming the holder and the fix through its supervisor.
    assert "stop it with 'systemctl stop squatter.service'" in text
    assert f"then: systemctl start {UNIT}" in lines
    assert "portguard why 8080/tcp" in lines
    assert "PORTGUARD_" not in text  # every substitution was filled in


def test_drain_timeout_is_explained_with_what_was_left(catalogued: Sandbox) -> None:
    make_time_wait(catalogued, 8080)
    registry = registry_for(UNIT, "8080/tcp", reuseaddr="false", wait="5s")
    started = guard_start(catalogued, registry)
    assert started.result.active_state == "failed"
    assert guard_status(catalogued, UNIT) == 75
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "drain-timeout"

    lines = explained(catalogued, UNIT)
    text = "\n".join(lines)
    assert f"Subject: {UNIT} not started: its own port 8080/tcp did not drain in time" in lines
    assert "Documentation: man:portguard(8) man:systemd.kill(5)" in lines
    assert f"{UNIT}'s own remnants (time-wait, state TIME-WAIT):" in text
    assert f"so after {entry['PORTGUARD_WAITED_MS']} ms portguard failed the start" in text
    assert "let the service set SO_REUSEADDR ('reuseaddr: true')" in text  # the remedy
    assert "PORTGUARD_" not in text

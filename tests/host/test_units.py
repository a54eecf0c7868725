"""FactsChild: systemd asked by a child forked before the question, bounded as unit_facts is.

The answers from a real systemd are the system tests' (tests/system/test_check.py, test_why.py);
here, the child's life: a bus that never answers, no bus, and a child never asked.
"""

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portguard.host import units


@pytest.fixture
def silent_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The system bus is a socket that accepts connections and never answers."""
    path = tmp_path / "bus"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
    try:
        yield
    finally:
        server.close()


def gone(pid: int) -> bool:
    """Whether PID is no child of ours any more (reaped, not a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.usefixtures("silent_bus")
def test_a_bus_that_never_answers_is_bounded() -> None:
    with units.FactsChild() as facts:
        facts.start()
        time.sleep(0.2)  # the child is stuck connecting, as it would be while we census
        began = time.monotonic()
        with pytest.raises(units.FactsUnavailable, match=r"did not answer over D-Bus within 0\.5s"):
            facts(["a.service"], timeout=0.5)
        assert time.monotonic() - began < 1.5
        pid = facts._pid
    assert pid is None  # reaped when the answer did not come


def test_no_bus_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/nothing-here")
    with units.FactsChild() as facts, pytest.raises(units.FactsUnavailable, match="D-Bus: "):
        facts(["a.service"], timeout=10)


@pytest.mark.usefixtures("silent_bus")
def test_a_child_never_asked_is_ended_with_the_block() -> None:
    with units.FactsChild() as facts:
        facts.start()
        pid = facts._pid
        assert pid is not None and not gone(pid)
    assert gone(pid)


def test_nothing_to_ask_forks_nothing() -> None:
    with units.FactsChild() as facts:
        assert facts([], timeout=1.0) == {}
        assert facts._pid is None


@pytest.mark.usefixtures("silent_bus")
def test_a_second_question_gets_a_child_of_its_own() -> None:
    with units.FactsChild() as facts:
        for _ in range(2):
            with pytest.raises(units.FactsUnavailable, match=r"within 0\.3s"):
                facts(["a.service"], timeout=0.3)

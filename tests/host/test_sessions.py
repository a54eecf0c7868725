"""Login sessions from logind's state files (sessions.py)."""

from pathlib import Path

import pytest

from portguard.host.sessions import Session, session, session_of_scope

# /run/systemd/sessions/c3 as systemd-logind writes it for an ssh login.
SSH_SESSION = """\
# This is private data. Do not parse.
UID=1000
USER=alice
ACTIVE=1
IS_DISPLAY=0
STATE=active
REMOTE=1
LEADER_FD_SAVED=1
TYPE=tty
ORIGINAL_TYPE=tty
CLASS=user
SCOPE=session-c3.scope
FIFO=/run/systemd/sessions/c3.ref
TTY=pts/0
REMOTE_HOST=192.0.2.10
SERVICE=sshd
POS=0
LEADER=4242
AUDIT=3
REALTIME=1700000000123456
MONOTONIC=123456789
CONTROLLERS=
DEVICES=
"""
CONSOLE_SESSION = "USER=root\nTTY=tty1\nSERVICE=login\nLEADER=\nREALTIME=\n"


@pytest.mark.parametrize(
    ("scope", "session_id"),
    [
        ("session-c3.scope", "c3"),
        ("session-3.scope", "3"),
        ("session-.scope", None),
        ("session-3.service", None),
        ("init.scope", None),
        ("user@1000.service", None),
        ("", None),
    ],
)
def test_session_of_scope(scope: str, session_id: str | None) -> None:
    assert session_of_scope(scope) == session_id


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    directory = tmp_path / "sessions"
    directory.mkdir()
    (directory / "c3").write_text(SSH_SESSION)
    (directory / "1").write_text(CONSOLE_SESSION)
    return directory


def test_an_ssh_session(sessions: Path) -> None:
    found = session("c3", directory=str(sessions))
    assert found is not None
    assert found.since == pytest.approx(1_700_000_000.123456)  # REALTIME is in microseconds
    assert found == Session(
        id="c3",
        user="alice",
        tty="pts/0",
        since=found.since,
        remote_host="192.0.2.10",
        service="sshd",
        leader=4242,
    )


def test_a_console_session_leaves_empty_values_unknown(sessions: Path) -> None:
    found = session("1", directory=str(sessions))
    assert found == Session("1", "root", "tty1", None, None, "login", None)


def test_missing_session_is_none(sessions: Path) -> None:
    assert session("c4", directory=str(sessions)) is None


def test_a_file_of_comments_only_is_no_session(sessions: Path) -> None:
    (sessions / "c5").write_text("# This is private data. Do not parse.\n# USER=alice\n")
    assert session("c5", directory=str(sessions)) is None


@pytest.mark.parametrize("session_id", ["../x", ".hidden", "", "/c3", "a/../c3"])
def test_hostile_ids_read_nothing(sessions: Path, session_id: str) -> None:
    # Each would name a readable session file if it were joined to the directory as it is.
    (sessions.parent / "x").write_text(SSH_SESSION)
    (sessions / ".hidden").write_text(SSH_SESSION)
    (sessions / "a").mkdir()
    assert session(session_id, directory=str(sessions)) is None

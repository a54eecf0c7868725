"""Journal entries over the native protocol (journal.py), received on a real AF_UNIX socket."""

import array
import fcntl
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portguard.host import journal
from portguard.host.journal import stderr_is_journal


def decode(payload: bytes) -> dict[str, str]:
    """The native protocol read as journald reads it: KEY=value lines, or KEY, LE64, bytes."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        end = payload.index(b"\n", pos)
        line = payload[pos:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", payload[end + 1 : end + 9])
            value = payload[end + 9 : end + 9 + size]
            assert payload[end + 9 + size : end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields[key.decode()] = value.decode()
    return fields


def test_encode_plain_fields() -> None:
    payload = journal.encode({"MESSAGE": "port 8080 held", "PRIORITY": "3"})
    assert payload == b"MESSAGE=port 8080 held\nPRIORITY=3\n"


def test_encode_newline_uses_the_binary_form() -> None:
    payload = journal.encode({"MESSAGE": "two\nlines", "PRIORITY": "3"})
    assert payload == b"MESSAGE\n" + (9).to_bytes(8, "little") + b"two\nlines\nPRIORITY=3\n"


def test_encode_counts_bytes_not_characters() -> None:
    payload = journal.encode({"MESSAGE": "é\n—"})
    assert payload == b"MESSAGE\n" + (6).to_bytes(8, "little") + "é\n—".encode() + b"\n"
    assert decode(payload) == {"MESSAGE": "é\n—"}


def test_encode_empty_value() -> None:
    assert journal.encode({"PORTGUARD_X": ""}) == b"PORTGUARD_X=\n"


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for /run/systemd/journal/socket."""
    path = str(tmp_path / "journal.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


def test_send_one_datagram(journald: tuple[socket.socket, str]) -> None:
    sock, path = journald
    fields = {
        "MESSAGE": "0.0.0.0:8080/tcp is held by nginx.service\nsecond line",
        "MESSAGE_ID": "d12e92fae08c4a5791aebc7c159078ed",
        "PRIORITY": "3",
        "PORTGUARD_PORT": "8080",
    }
    assert journal.send(fields, path) is None
    payload, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
    assert ancillary == []
    assert decode(payload) == fields


def test_large_entry_travels_as_a_sealed_memfd(journald: tuple[socket.socket, str]) -> None:
    sock, path = journald
    fields = {"MESSAGE": "held", "PORTGUARD_REMEDY": "x" * 400_000, "NOTE": "a\nb" * 1000}
    assert len(journal.encode(fields)) > 300_000
    assert journal.send(fields, path) is None
    payload, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
    assert payload == b""
    [(level, kind, data)] = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds = array.array("i")
    fds.frombytes(data[: fds.itemsize])
    fd = fds[0]
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        wanted = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
        assert seals & wanted == wanted
        size = os.fstat(fd).st_size
        assert decode(os.pread(fd, size, 0)) == fields
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"changed", 0)
    finally:
        os.close(fd)


def test_send_without_a_journal_says_why(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.sock")
    assert journal.send({"MESSAGE": "x"}, absent) == f"{absent}: No such file or directory"


def test_send_to_a_stream_socket_says_why(tmp_path: Path) -> None:
    """Not a journal: the wrong socket type is an error the caller survives (stderr remains)."""
    path = str(tmp_path / "stream.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        assert journal.send({"MESSAGE": "x"}, path) == f"{path}: Protocol wrong type for socket"


def test_send_gives_up_when_journald_stops_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full journald socket must not hold a unit's start: send() is bounded."""
    monkeypatch.setattr(journal, "SEND_TIMEOUT", 0.1)
    path = str(tmp_path / "stuck.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)  # bound, never read: its queue fills up
        sent = 0
        while True:
            began = time.monotonic()
            unsent = journal.send({"MESSAGE": "x" * 1000}, path)
            took = time.monotonic() - began
            if unsent is not None:
                break
            sent += 1
            assert sent < 10_000, "the queue never filled"
    assert sent > 0
    assert unsent == "journald took nothing for 0.1 s"
    assert 0.1 <= took < 1.0  # the refused send waited SEND_TIMEOUT, then gave up


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    """systemd's JOURNAL_STREAM=DEV:INODE names the stream it connected to stdout/stderr."""
    with (tmp_path / "err").open("w") as handle:
        st = os.fstat(handle.fileno())
        named = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(named, handle.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"},
                                     handle.fileno())  # fmt: skip
        # A child whose stderr was redirected still inherits the variable: not the journal.
        with (tmp_path / "other").open("w") as other:
            assert not stderr_is_journal(named, other.fileno())
        for wrong in ({}, {"JOURNAL_STREAM": ""}, {"JOURNAL_STREAM": "x:y"},
                      {"JOURNAL_STREAM": "12"}):  # fmt: skip
            assert not stderr_is_journal(wrong, handle.fileno())
    assert not stderr_is_journal(named, 999)  # not open

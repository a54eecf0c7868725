"""Journal entries over systemd's native protocol (systemd.journal-fields(7), sd_journal_sendv).

Small and stdlib-only. pystemd's sendv would ignore errors and add CODE_* fields of its own.
"""

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SEND_TIMEOUT = 1.0


def encode(fields: Mapping[str, str]) -> bytes:
    """KEY=value lines; a value with a newline uses the binary form: KEY, LE64 length, bytes."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", errors="replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def stderr_is_journal(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether FD is the journal stream systemd connected, as JOURNAL_STREAM (DEV:INODE of
    that stream, systemd.exec(5)) says; a redirected or inherited stderr is not it."""
    device, colon, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not colon or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def send(fields: Mapping[str, str], path: str = JOURNAL_SOCKET) -> str | None:
    """Send one entry: None once journald has it, else why it was not sent (the caller still
    has stderr, and says there that the entry is lost)."""
    payload = encode(fields)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # A journald that stopped reading must not hold the unit's start. It queues up to
            # net.unix.max_dgram_qlen datagrams (PID 1 raises it to 512) while it does not read;
            # past that, with PID 1's own messages of a boot storm filling it, a send waits here.
            sock.settimeout(SEND_TIMEOUT)
            try:
                sock.sendto(payload, path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):  # too large for a datagram
                    raise
                _send_memfd(sock, payload, path)
    except TimeoutError:
        return f"journald took nothing for {SEND_TIMEOUT:g} s"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def _send_memfd(sock: socket.socket, payload: bytes, path: str) -> None:
    """Large entries travel as a sealed memfd, as sd_journal_sendv does."""
    fd = os.memfd_create("portguard-journal", os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, payload)
        # journald refuses a memfd whose contents could still change under it.
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)  # fmt: skip
        sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], 0, path)
    finally:
        os.close(fd)

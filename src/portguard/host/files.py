"""Files this host's readers must see whole: the old version or the new, never a part.

Drop-ins (systemd may reload at any moment) and the audit's metrics file (node_exporter's
textfile collector may read at any moment) are written the one way: a temporary file in the
same directory (a rename is atomic only within one filesystem), synced, renamed over the
target, and the directory synced so the rename survives a crash. The temporary name starts
with a dot and ends in `.tmp`, so neither systemd (`*.conf`) nor the collector (`*.prom`)
ever reads one a crash left behind.
"""

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Put TEXT at PATH with MODE (whatever the umask: the readers run as other users).
    Raises OSError, with PATH's directory as its filename when that is what is missing."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), mode)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make a rename or an unlink in DIRECTORY durable; a filesystem that cannot sync a
    directory is no error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)

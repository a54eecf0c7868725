"""`portguard dropin`'s core: the guard drop-in in /etc/systemd/system/UNIT.d/, added or removed.

Files are written atomically (a temporary file in the same directory, fsync, rename) and only
when their content changes; a file at our path that portguard did not write (its first line
is not `MARK`) is never overwritten or removed. The drop-in runs the portguard that runs
now, with the arguments that make its probe bind as the unit will (policy/mirror.py, from
the unit's files below the root); a unit it cannot mirror is refused, not guarded wrongly.
"""

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from portguard.errors import CannotWrite, Exit, Refused, UsageError
from portguard.freepath.trust import first_unsafe
from portguard.host.dropins import DROPIN_NAME, GUARD, MARK, dropin_text, guardable_problem
from portguard.host.files import sync_directory, write_atomically
from portguard.host.unitfiles import UnitFileError, read_settings
from portguard.policy.mirror import Decline, guard_args

UNIT_DIR = Path("etc/systemd/system")
# Longer than systemd's own 25 s method-call timeout, so the bus's own error usually comes first.
RELOAD_TIMEOUT = 30.0
# More than any drop-in we write; enough to tell ours from someone else's.
_READ_LIMIT = 65536


class Outcome(StrEnum):
    """What `dropin` did to one unit's file; the word it prints."""

    WRITTEN = "written"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    ABSENT = "absent"  # --remove, and there was no file


@dataclass(frozen=True, slots=True)
class Change:
    unit: str
    path: Path
    outcome: Outcome

    def __str__(self) -> str:
        return f"{self.outcome} {self.path}"


def dropin_path(unit: str, *, root: Path) -> Path:
    """Where UNIT's guard drop-in lives below ROOT."""
    return root / UNIT_DIR / f"{unit}.d" / DROPIN_NAME


def origin(unit: str) -> str:
    """The drop-in's second line: who wrote it and how to undo it."""
    return f"written by 'portguard dropin'; 'portguard dropin --remove {unit}' removes it"


def check_names(units: Sequence[str]) -> None:
    """Refuse, before anything is written, every name that cannot carry the guard."""
    problems = [(unit, guardable_problem(unit)) for unit in units]
    refused = [f"{unit!r} is not a unit that can be guarded: {p}" for unit, p in problems if p]
    if refused:
        raise UsageError("; ".join(refused))


def running_guard(argv0: str | None = None) -> str:
    """The path of the portguard executable running now, for the drop-in to run at each start."""
    return guard_path(os.path.abspath(argv0 if argv0 is not None else sys.argv[0]))


def guard_path(path: str, *, root: Path | None = None) -> str:
    """PATH, if it can be the guard a unit runs at each start; UsageError saying why not:
    `python3 -m portguard` has no executable, and the guard runs as root, so nobody else may
    be able to change it (a directory others may write must keep the sticky bit). Below an
    image's ROOT, only its form is checked."""
    if not os.path.isabs(path) or os.path.basename(path) == "__main__.py":
        raise UsageError(
            f"{path} cannot be a unit's ExecStartPre=: name an installed portguard executable "
            f"(the package's is {GUARD})"
        )
    if root is not None and os.path.realpath(root) != "/":
        return path
    if not os.access(path, os.X_OK) or not os.path.isfile(path):
        raise UsageError(f"{path} cannot be a unit's ExecStartPre=: not an executable file")
    # The registry's own trust rule: root's alone from / down, links resolved, sticky allowed.
    unsafe = first_unsafe([path])
    if unsafe is not None:
        raise UsageError(
            f"{path} cannot be a unit's guard: {unsafe} is not root's alone, and the guard "
            "runs as root"
        )
    return path


def mirror_args(unit: str, *, root: Path) -> tuple[str, ...]:
    """The guard's arguments for UNIT, from its unit files below ROOT; Refused when the guard
    cannot bind as UNIT will."""
    try:
        return guard_args(unit, read_settings(unit, str(root)))
    except (UnitFileError, Decline) as exc:
        reason = str(exc).removeprefix(f"{unit}: ")
        raise Refused(f"{unit}: not guarded: {reason}") from None


def add_dropin(unit: str, *, root: Path, guard: str = GUARD, args: tuple[str, ...] = ()) -> Change:
    """Write UNIT's drop-in below ROOT, unless the same text is already there."""
    path = dropin_path(unit, root=root)
    text = dropin_text(unit, origin=origin(unit), guard=guard, args=args)
    _require_dir(root)
    if _read_ours(path) == text:
        return Change(unit, path, Outcome.UNCHANGED)
    try:
        _make_dirs(path.parent, stop=root)
    except OSError as exc:
        where = exc.filename or path.parent
        raise CannotWrite(f"{where}: cannot create the directory: {exc.strerror}") from None
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise CannotWrite(f"{path}: cannot write: {exc.strerror or exc}") from None
    return Change(unit, path, Outcome.WRITTEN)


def remove_dropin(unit: str, *, root: Path) -> Change:
    """Remove UNIT's drop-in below ROOT if portguard wrote it; then its UNIT.d/ if empty."""
    path = dropin_path(unit, root=root)
    _require_dir(root)
    if _read_ours(path) is None:
        return Change(unit, path, Outcome.ABSENT)
    try:
        path.unlink()
        sync_directory(path.parent)
    except FileNotFoundError:
        return Change(unit, path, Outcome.ABSENT)
    except OSError as exc:
        raise CannotWrite(f"{path}: cannot remove: {exc.strerror or exc}") from None
    # Not empty (the unit has other drop-ins): leave it.
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return Change(unit, path, Outcome.REMOVED)


def run(
    units: Sequence[str],
    *,
    remove: bool,
    reload: bool,
    root: Path | None,
    guard: str | None = None,
) -> int:
    """The `dropin` verb: one line per unit on stdout, errors on stderr; the exit code.

    GUARD: the portguard the drop-ins run (default: the one running now).
    """
    check_names(units)
    base = root or Path("/")
    if reload and os.path.realpath(base) != "/":
        raise UsageError(f"--reload with --root {base}: an image being built has no systemd")
    if not remove:
        guard = guard_path(guard, root=root) if guard else running_guard()
    code = Exit.OK
    changed = False
    for unit in dict.fromkeys(units):
        try:
            if remove:
                done = remove_dropin(unit, root=base)
            else:
                assert guard is not None
                _require_dir(base)
                done = add_dropin(unit, root=base, guard=guard, args=mirror_args(unit, root=base))
        except (CannotWrite, Refused) as exc:
            print(f"portguard: {exc.message}", file=sys.stderr)
            code = max(code, exc.exit_code)
            continue
        print(done, flush=True)
        changed |= done.outcome in (Outcome.WRITTEN, Outcome.REMOVED)
    if reload:
        # Also after a failure: the files that are in place should take effect.
        reloaded = _reload()
        return int(code) or reloaded
    if changed and root is None:
        print(
            "portguard: systemd sees the change after 'systemctl daemon-reload' (or --reload)",
            file=sys.stderr,
        )
    return int(code)


def _reload() -> int:
    from portguard.host.units import ReloadFailed, reload_daemon  # noqa: PLC0415 - only with --reload

    try:
        reload_daemon(timeout=RELOAD_TIMEOUT)
    except ReloadFailed as exc:
        print(f"portguard: systemd was not reloaded: {exc}", file=sys.stderr)
        return int(Exit.UNAVAILABLE)
    print("reloaded systemd")
    return int(Exit.OK)


def _read_ours(path: Path) -> str | None:
    """The text of the drop-in at PATH if portguard wrote it; None when there is none.

    Anything else at PATH (a file without our mark, a symlink, a directory) is someone
    else's: CannotWrite, so it is neither overwritten nor removed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: someone else's choice
            raise _not_ours(path) from None
        raise CannotWrite(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_ours(path)
        data = os.read(fd, _READ_LIMIT)
    except OSError as exc:
        raise CannotWrite(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    if not text.startswith(MARK):
        raise _not_ours(path)
    return text


def _require_dir(root: Path) -> None:
    # A mistyped --root must not read as "absent" or grow a new tree.
    try:
        mode = os.stat(root).st_mode
    except OSError as exc:
        raise CannotWrite(f"{root}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise CannotWrite(f"{root}: not a directory")


def _not_ours(path: Path) -> CannotWrite:
    return CannotWrite(
        f"{path}: not written by portguard (its first line is not '{MARK}'); left alone"
    )


def _make_dirs(directory: Path, *, stop: Path) -> None:
    """Create DIRECTORY and its missing parents below STOP, each 0755 whatever the umask."""
    missing = []
    while directory != stop and not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            continue  # made meanwhile; `is_dir` above decides nothing more
        os.chmod(path, 0o755)

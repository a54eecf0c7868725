"""portguard-generator: a guard drop-in for every enforced or warned unit of the registry.

systemd runs generators (systemd.generator(7)) at boot and at every daemon-reload, before
it loads units, with three output directories (one, for tests, stands for all three); this
one writes NORMAL/UNIT.d/50-portguard.conf for each `enforce` unit (the guard's failure
blocks the start) and each `warn` unit (`ExecStartPre=-`: logged, ignored), none for
`audit`. A template key (`redis@.service`) gets the template's drop-in, which every
instance inherits. Each unit's own files (host/unitfiles.py, systemd's search path and
precedence) say how its ExecStart= binds, and the drop-in passes that to the guard
(policy/mirror.py); a unit it cannot mirror gets no drop-in and one kernel-log line.

Boot must never break because of us: a missing registry generates nothing, silently; a
broken one (lint errors, unreadable, or writable by someone other than root, as `check`
judges it) generates nothing and leaves one line in the kernel log (stderr when /dev/kmsg
cannot be opened); so does any surprise. The exit status is always 0. Nothing is written
outside the output directory: no cache, no /run/portguard, no byte-code (the entry runs
with -B). The registry is read by fastreader.py, and by the full reader (model.py and
lint.py) only when that one declines; never the netlink or D-Bus libraries, nor the rest
of `check` (tests/commands/test_generator.py proves it).
"""

import contextlib
import errno
import os
import sys
from collections.abc import Mapping, Sequence

from portguard.errors import ConfigError
from portguard.freepath.trust import REGISTRY_DIR, distrust, first_unsafe, registry_files
from portguard.host.dropins import DROPIN_NAME, Blocking, dropin_text
from portguard.host.unitfiles import UnitFileError, UnitFiles
from portguard.policy.mirror import Decline, guard_args

IDENTIFIER = "portguard-generator"
# A registry directory (or file) to read instead of REGISTRY_DIR: for tests and image builds.
REGISTRY_ENV = "PORTGUARD_REGISTRY"
# The root whose unit files say how each unit starts, instead of /: for tests and images.
UNIT_ROOT_ENV = "PORTGUARD_UNIT_ROOT"
KMSG = "/dev/kmsg"
# The kernel refuses a record longer than about 1 KiB; a line is cut well before that.
KMSG_MAX_BYTES = 900
LOG_ERR = 3
LOG_WARNING = 4
_BLOCKING = {"enforce": Blocking.BLOCKS, "warn": Blocking.LOGS}  # audit: no guard

USAGE = "usage: portguard-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (see systemd.generator(7))"

# (unit, mode, file:line:col of its key in the registry). A plain tuple: dataclasses alone
# would cost the generator more to import than all of its own work on a small registry.
Unit = tuple[str, str, str]


class RegistryProblem(ConfigError):
    """The registry cannot be used: generate nothing and say why, and the fix, in one line."""


def main(
    argv: Sequence[str], *, environ: Mapping[str, str] = os.environ, kmsg: str | None = None
) -> int:
    """The generator: drop-ins into argv's normal directory; always 0. KMSG: the kernel log."""
    kmsg = kmsg or KMSG
    try:
        _generate(argv, environ, kmsg)
    except Exception as exc:  # boot must never break because of us
        log(
            f"internal error, no guard drop-ins generated: {type(exc).__name__}: {exc} "
            "(a portguard bug: please report it)",
            kmsg=kmsg,
        )
    return 0


def _generate(argv: Sequence[str], environ: Mapping[str, str], kmsg: str) -> None:
    # systemd passes three directories; just one means all three are that one (for tests).
    if len(argv) not in (1, 3) or not all(argv):
        log(USAGE, kmsg=kmsg, level=LOG_WARNING)
        return
    if environ.get("SYSTEMD_SCOPE") == "user":
        return  # the registry guards system units; a user's manager runs none of them
    try:
        units = registry_units(os.path.normpath(environ.get(REGISTRY_ENV) or REGISTRY_DIR))
    except RegistryProblem as problem:
        log(str(problem), kmsg=kmsg)
        return
    if not any(mode in _BLOCKING for _, mode, _ in units):
        return
    try:
        os.makedirs(argv[0], 0o755, exist_ok=True)
    except OSError as exc:
        log(f"cannot write to {argv[0]}: {exc.strerror or exc}; no unit is guarded", kmsg=kmsg)
        return
    failures = write_dropins(units, argv[0], unit_root=environ.get(UNIT_ROOT_ENV) or "/", kmsg=kmsg)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        log(f"cannot write {failures[0]}{more}; those units are not guarded", kmsg=kmsg)


def registry_units(root: str) -> list[Unit]:
    """Every unit of the registry at ROOT (a directory, or one file); none when it is missing.

    Raises RegistryProblem for a registry `check` would refuse: untrusted or invalid.
    """
    if os.path.isdir(root):
        files = registry_files(root)
        if not any(os.path.lexists(f) for f in files):
            return []  # installed but not configured: nothing to guard, nothing to say
        main_file = os.path.join(root, "registry.yaml")
        main = main_file if files[0] == main_file else None
        dropins = files[1:] if main else files
        watched = [root, os.path.join(root, "registry.d"), *files]
    elif os.path.lexists(root):
        main, dropins, watched = root, [], [root]
    else:
        return []
    unsafe = first_unsafe(watched)
    if unsafe:
        raise RegistryProblem(f"{distrust(unsafe)}; no guard drop-ins generated")
    try:
        from portguard.registry import fastreader  # noqa: PLC0415 - YAML only once there is a registry

        units = fastreader.read(main, dropins)
    except Exception:  # a surprise in the fast reader: the full one decides
        units = None
    return units if units is not None else _full_read(root)


def _full_read(root: str) -> list[Unit]:
    """The registry as `lint` reads it; raises RegistryProblem with its first error."""
    from pathlib import Path  # noqa: PLC0415 - the full reader's imports cost ~20 ms

    from portguard.registry.entries import RegistrySource  # noqa: PLC0415
    from portguard.registry.lint import check_registry  # noqa: PLC0415
    from portguard.registry.model import load  # noqa: PLC0415

    loaded = load(RegistrySource.from_paths([Path(root)]))
    errors = [f for f in check_registry(loaded, None) if f.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RegistryProblem(
            f"registry invalid: {errors[0]}{more}; "
            "no guard drop-ins generated (run 'portguard lint')"
        )
    return [(e.name, e.mode.value, str(e.location)) for e in loaded.registry.units.values()]


def dropin(unit: str, mode: str, origin: str, args: tuple[str, ...] = ()) -> str:
    """The drop-in for one unit, its header naming this generator and the registry's place."""
    header = (
        f"Generated by {IDENTIFIER} from {_printable(origin)} (mode: {mode}); "
        "edit the registry, not this file"
    )
    return dropin_text(unit, origin=header, blocking=_BLOCKING[mode], args=args)


def write_dropins(
    units: Sequence[Unit], normal_dir: str, *, unit_root: str = "/", kmsg: str = KMSG
) -> list[str]:
    """A drop-in under NORMAL_DIR for each enforce or warn unit whose start the guard can
    mirror (from its unit files under UNIT_ROOT); one kernel-log line for each unit it
    cannot, which stays unguarded. Returns one line per write that failed."""
    failures = []
    files = UnitFiles(unit_root, generated=False)
    # Paths relative to the open output directory: the kernel walks two names, not ten.
    out = os.open(normal_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for unit, mode, origin in units:
            if mode not in _BLOCKING:
                continue
            try:
                args = guard_args(unit, files.read_settings(unit))
            except (UnitFileError, Decline) as exc:
                reason = str(exc).removeprefix(f"{unit}: ")
                log(f"{unit}: not guarded: {reason} (registry: {origin})", kmsg=kmsg,
                    level=LOG_WARNING)  # fmt: skip
                continue
            try:
                _write(out, f"{unit}.d", DROPIN_NAME, dropin(unit, mode, origin, args))
            except OSError as exc:
                path = os.path.join(normal_dir, f"{unit}.d", DROPIN_NAME)
                failures.append(f"{path}: {exc.strerror or exc}")
    finally:
        os.close(out)
    return failures


def _write(out: int, directory: str, name: str, text: str) -> None:
    """Whole or not at all: a half-written ExecStartPre= line could fail the unit's start.
    OUT is the output directory's descriptor, DIRECTORY and NAME relative to it.

    No temporary file and rename: systemd reads the directory only once we have exited, a
    short or failed write is removed, and a 1,000-unit registry saves a fifth of its writes.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o755, dir_fd=out)
    path = f"{directory}/{name}"
    data = text.encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644, dir_fd=out)
    try:
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path, dir_fd=out)
        raise


def log(message: str, *, kmsg: str = KMSG, level: int = LOG_ERR) -> None:
    """One line in the kernel log, where journald files it under our name; else on stderr.

    Generators may talk to no other process, syslog and the journal included
    (systemd.generator(7)), so /dev/kmsg is the place. The `<N>` prefix is the syslog level
    for both: the kernel reads it from a record, journald from a line on a stream.
    """
    line = _printable(message)
    record = f"<{level}>{IDENTIFIER}[{os.getpid()}]: {line}".encode()
    if len(record) > KMSG_MAX_BYTES:
        record = record[: KMSG_MAX_BYTES - 3].decode(errors="ignore").encode() + b"..."
    if _write_kmsg(kmsg, record + b"\n"):
        return
    with contextlib.suppress(OSError, ValueError):  # nowhere left to say it
        print(f"<{level}>{IDENTIFIER}: {line}", file=sys.stderr, flush=True)


def _write_kmsg(path: str, record: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, record)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _printable(text: str) -> str:
    """TEXT on one line: a file name may hold a newline, and a comment or log line may not."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)

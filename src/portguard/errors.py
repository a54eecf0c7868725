"""Exit codes (sysexits.h) and the exceptions a user can cause.

Every exception a caller may see is a PortguardError: shown as one line with its exit code,
never a traceback. A module's own control flow (the fast reader declining, lint giving up on
a tangled registry) stays a private class of that module.
"""

from collections.abc import Callable
from enum import IntEnum


class Exit(IntEnum):
    """Exit codes; systemd prints the sysexits ones by name in `systemctl status`."""

    OK = 0
    OCCUPIED = 1  # `why` found an occupant; `audit` found drift
    USAGE = 64
    NOHOST = 68
    UNAVAILABLE = 69
    SOFTWARE = 70
    CANTCREAT = 73
    TEMPFAIL = 75
    NOPERM = 77
    CONFIG = 78


class PortguardError(Exception):
    """An error the user can fix; shown as one line, never as a traceback."""

    exit_code: Exit = Exit.SOFTWARE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PortguardError):
    exit_code = Exit.USAGE


class ConfigError(PortguardError):
    exit_code = Exit.CONFIG


class NoRegistry(ConfigError):
    """No registry file at the path a verb reads (`why` goes on without one)."""


class InvalidValue(ConfigError):
    """A value that is not what it must be (a claim, a time span); its reader knows where it
    stood and says so: a registry's file:line:col (78), or the option given (64)."""


class Unavailable(PortguardError):
    """What the command cannot do without (the kernel's socket table, a sysctl) is unreadable."""

    exit_code = Exit.UNAVAILABLE


class CannotWrite(PortguardError):
    """A file could not be written or removed; whatever was there is left as it was."""

    exit_code = Exit.CANTCREAT


class Denied(PortguardError):
    """Not permitted: the message says what needs root."""

    exit_code = Exit.NOPERM


class Refused(PortguardError):
    """The unit's own configuration keeps the guard from mirroring its start: not guarded."""

    exit_code = Exit.CONFIG


def shielded(command: Callable[[], int], *, debug: bool) -> int:
    """COMMAND's exit code; whatever it raises, one line on stderr and an exit code, a
    traceback only with DEBUG. The command line's (cli.main) and a held `check`'s, which
    comes here without argparse."""
    import sys  # noqa: PLC0415 - the floor imports nothing it need not

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        return command()
    except PortguardError as exc:
        say(f"portguard: {exc.message}")
        if exc.hint:
            say(f"portguard: hint: {exc.hint}")
        return int(exc.exit_code)
    except SystemExit as exc:  # --help and --version end through argparse's exit()
        return exc.code if isinstance(exc.code, int) else int(Exit.OK)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        import os  # noqa: PLC0415

        # Output piped into `head`: not an error; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(Exit.OK)
    except Exception as exc:  # the last line of defence against tracebacks
        if debug:
            import traceback  # noqa: PLC0415 - only for --debug: it costs ~14 ms to load

            traceback.print_exc()
        say(f"portguard: internal error: {type(exc).__name__}: {exc} (a bug; rerun with --debug)")
        return int(Exit.SOFTWARE)

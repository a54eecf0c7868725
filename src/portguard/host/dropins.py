"""The guard's drop-in: the one text `portguard dropin` and the generator both write.

Pure and small: the generator imports it at boot. A unit name never reaches the file's
directives (the guard finds its unit from its own cgroup), so no input can inject a
directive or a `%` specifier; names only appear in the header comment, and only after
systemd's naming rules (which allow neither newlines nor `%`) have accepted them. The
guard's arguments (policy/mirror.py) are checked against a closed alphabet for the same
reason.
"""

import re
from enum import StrEnum

from portguard.registry.unitname import guard_dir_problem, unit_name_problem, unit_type

DROPIN_NAME = "50-portguard.conf"
GUARD = "/usr/bin/portguard"
# What an argument of the guard's command line may hold: user names, option lists.
_SAFE_ARGUMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,-]*")
# The first line of every file we write: what `dropin --remove` looks for before deleting.
MARK = "# portguard guard drop-in"
_SECTION = {"service": "Service", "socket": "Socket"}


class Blocking(StrEnum):
    """Whether a failing guard stops the start (enforce) or is only logged (warn)."""

    BLOCKS = ""
    LOGS = "-"  # ExecStartPre=- : the failure is logged and ignored


def guardable_problem(unit: str) -> str | None:
    """Why UNIT cannot carry the guard, or None."""
    problem = unit_name_problem(unit) or guard_dir_problem(unit)
    if problem:
        return problem
    if unit_type(unit) not in _SECTION:
        return "only .service and .socket units run ExecStartPre="
    return None


def dropin_text(
    unit: str,
    *,
    origin: str,
    blocking: Blocking = Blocking.BLOCKS,
    guard: str = GUARD,
    args: tuple[str, ...] = (),
) -> str:
    """The drop-in for UNIT; ORIGIN says who wrote it and from what (a header line), GUARD
    is the portguard executable, ARGS what makes its probe bind as the unit will."""
    problem = guardable_problem(unit)
    if problem:
        raise ValueError(f"{unit!r}: {problem}")
    if "\n" in origin or "\r" in origin:
        raise ValueError("the origin is one line of text")
    if not guard.startswith("/") or not _SAFE_ARGUMENT.fullmatch(guard.replace("/", "_")):
        raise ValueError(f"{guard!r}: the guard is an absolute path of plain characters")
    for arg in args:
        if not (arg.startswith("--") and _SAFE_ARGUMENT.fullmatch(arg[2:])) and not (
            _SAFE_ARGUMENT.fullmatch(arg)
        ):
            raise ValueError(f"{arg!r}: not an argument the guard takes")
    section = _SECTION[unit_type(unit)]
    # `+`: the guard runs outside the unit's exec sandbox (a NoExecPaths= unit could not even
    # start it) and as root, yet in its cgroup and network namespace; it takes on the
    # identity the service binds with for the probe alone (ARGS). packaging/README.md, "How
    # the guard runs"; tests/system/test_prefix.py.
    command = " ".join((guard, "check", *args))
    return f"{MARK} for {unit}\n# {origin}\n[{section}]\nExecStartPre={blocking.value}+{command}\n"

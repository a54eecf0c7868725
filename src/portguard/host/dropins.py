"""The guard's drop-in: the one text `portguard dropin` and the generator both write.

Pure and small: the generator imports it at boot. A unit name never reaches the file's
directives (the guard finds its unit from its own cgroup), so no input can inject a
directive or a `%` specifier; names only appear in the header comment, and only after
systemd's naming rules (which allow neither newlines nor `%`) have accepted them.
"""

from enum import StrEnum

from portguard.registry.unitname import unit_name_problem, unit_type

DROPIN_NAME = "50-portguard.conf"
GUARD = "/usr/bin/portguard check"
# The first line of every file we write: what `dropin --remove` looks for before deleting.
MARK = "# portguard guard drop-in"
_SECTION = {"service": "Service", "socket": "Socket"}


class Blocking(StrEnum):
    """Whether a failing guard stops the start (enforce) or is only logged (warn)."""

    BLOCKS = ""
    LOGS = "-"  # ExecStartPre=- : the failure is logged and ignored


def guardable_problem(unit: str) -> str | None:
    """Why UNIT cannot carry the guard, or None."""
    problem = unit_name_problem(unit)
    if problem:
        return problem
    if unit_type(unit) not in _SECTION:
        return "only .service and .socket units run ExecStartPre="
    return None


def dropin_text(unit: str, *, origin: str, blocking: Blocking = Blocking.BLOCKS) -> str:
    """The drop-in for UNIT; ORIGIN says who wrote it and from what (a header line)."""
    problem = guardable_problem(unit)
    if problem:
        raise ValueError(f"{unit!r}: {problem}")
    if "\n" in origin or "\r" in origin:
        raise ValueError("the origin is one line of text")
    section = _SECTION[unit_type(unit)]
    # No prefix: the guard runs as the unit's User=, with its capabilities, namespaces and
    # restrictions, so it probes exactly the bind the service will make. `+` and `!` would
    # run it as root, and a privileged port would look free to it (README: "Why the drop-in
    # has no prefix"; tests/system/test_prefix.py).
    return f"{MARK} for {unit}\n# {origin}\n[{section}]\nExecStartPre={blocking.value}{GUARD}\n"

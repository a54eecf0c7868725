"""systemd unit names: validity by systemd's own rules (src/basic/unit-name.c), templates."""

import re
from enum import StrEnum

# systemd's UNIT_NAME_MAX is 256 including the terminating NUL.
UNIT_NAME_MAX = 255
# The guard's drop-in lives in NAME.d/, and a file name is at most 255 bytes (NAME_MAX).
GUARDED_NAME_MAX = UNIT_NAME_MAX - len(".d")


def guard_dir_problem(name: str) -> str | None:
    """Why NAME, a valid unit name, cannot get the guard's drop-in directory, or None."""
    if len(name.encode()) > GUARDED_NAME_MAX:
        return (
            f"a guarded unit's name is at most {GUARDED_NAME_MAX} characters: its drop-in "
            "directory NAME.d must fit a file name's 255"
        )
    return None


UNIT_TYPES = frozenset(
    {
        "service",
        "socket",
        "target",
        "device",
        "mount",
        "automount",
        "swap",
        "timer",
        "path",
        "slice",
        "scope",
    }
)
# VALID_CHARS in unit-name.c, plus '@' which separates prefix and instance.
_VALID_CHARS = re.compile(r"[0-9A-Za-z:_.\\@-]*")


class UnitNameKind(StrEnum):
    PLAIN = "plain"  # foo.service
    TEMPLATE = "template"  # foo@.service
    INSTANCE = "instance"  # foo@bar.service


def unit_name_problem(name: str) -> str | None:
    """Why NAME is not a valid unit name, or None when it is one."""
    if not name:
        return "a unit name cannot be empty"
    if len(name) > UNIT_NAME_MAX:
        return f"a unit name is at most {UNIT_NAME_MAX} characters"
    prefix, dot, suffix = name.rpartition(".")
    if not dot or not prefix:
        return "a unit name needs a type suffix such as .service or .socket"
    if suffix not in UNIT_TYPES:
        expected = ", .".join(sorted(UNIT_TYPES))
        # repr: a suffix may hold a newline, and every message is one line.
        return f"{'.' + suffix!r} is not a unit type (expected one of .{expected})"
    bad = _VALID_CHARS.fullmatch(prefix) is None
    if bad:
        chars = sorted({c for c in prefix if not _VALID_CHARS.fullmatch(c)})
        shown = ", ".join(repr(c) for c in chars)
        return f"{shown} not allowed in a unit name (letters, digits and :-_.\\@ only)"
    if prefix.startswith("@"):
        return "a unit name cannot start with '@'"
    return None


def unit_name_kind(name: str) -> UnitNameKind:
    """The kind of a valid unit name."""
    prefix = name.rpartition(".")[0]
    if "@" not in prefix:
        return UnitNameKind.PLAIN
    if prefix.endswith("@") and prefix.count("@") == 1:
        return UnitNameKind.TEMPLATE
    return UnitNameKind.INSTANCE


def unit_type(name: str) -> str:
    return name.rpartition(".")[2]


def split_instance(name: str) -> tuple[str, str | None]:
    """`redis@6379.service` -> (`redis@.service`, `6379`); a plain name -> (name, None)."""
    prefix, _, suffix = name.rpartition(".")
    head, at, instance = prefix.partition("@")
    if not at or not instance:
        return name, None
    return f"{head}@.{suffix}", instance

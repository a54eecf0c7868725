"""A problem found in a registry, and where: file:line:col."""

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Location:
    """Where in a registry file: file:line:col."""

    path: str
    line: int = 0  # 1-based; 0 when the problem is the file as a whole
    column: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}" if self.line else self.path


@dataclass(frozen=True, slots=True)
class Member:
    """One claim of a group a finding is about (overlapping claims): whose, what, where."""

    unit: str
    claim: str
    location: Location


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem lint found, where, and how bad."""

    severity: Severity
    location: Location
    message: str
    rule: str
    members: tuple[Member, ...] = ()  # every claim of the group, when it is about a group

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.rule}]"

"""Shared helpers for the registry and lint tests: registry files in tmp_path, findings."""

import os
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import portguard
from portguard.freepath import trust
from portguard.registry.entries import LoadResult, RegistrySource
from portguard.registry.findings import Finding, Severity
from portguard.registry.lint import check_registry
from portguard.registry.localports import LocalPorts, PortSet
from portguard.registry.model import load

# The code under test: src/ in a checkout. With PORTGUARD_TEST_INSTALLED=1 (the autopkgtest,
# debian/tests/unit) it is the installed package, and the files the package ships (launcher,
# generator, units, catalog, example) are read at their installed paths.
INSTALLED = os.environ.get("PORTGUARD_TEST_INSTALLED") == "1"
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
CHECKOUT = Path(__file__).resolve().parent.parent
SRC = Path(portguard.__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
RULES = DATA / "rules"
DESIGN_EXAMPLE = DATA / "design-example.yaml"


def shipped(in_checkout: str, installed: str) -> Path:
    """A file the package ships: the checkout's copy, or the installed one under autopkgtest."""
    return Path(installed) if INSTALLED else CHECKOUT / in_checkout


EXAMPLE_REGISTRY = shipped(
    "packaging/registry.example.yaml", "/usr/share/doc/portguard/examples/registry.example.yaml"
)


def pytest_configure(config: pytest.Config) -> None:
    """An installed-package run that imports the checkout instead would prove nothing."""
    if INSTALLED and SRC != DIST_PACKAGES:
        raise pytest.UsageError(f"PORTGUARD_TEST_INSTALLED=1 but portguard was imported from {SRC}")


# The interpreter itself, not the venv's link to it: a child that drops root cannot traverse a
# checkout under a directory only root may enter (/root, any mktemp -d).
SYSTEM_PYTHON = os.path.realpath(sys.executable)


@pytest.fixture(scope="session")
def readable_src() -> Iterator[Path]:
    """A copy of the code under test that any user can import, for children that drop root.

    The checkout may lie below a directory only root can traverse; the installed package
    (PORTGUARD_TEST_INSTALLED) is readable already and is used as is.
    """
    if INSTALLED:
        yield SRC
        return
    top = Path(tempfile.mkdtemp(prefix="portguard-src-"))
    try:
        top.chmod(0o755)
        shutil.copytree(SRC / "portguard", top / "portguard",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for path in (top, *top.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield top
    finally:
        shutil.rmtree(top)


NOBODY = 65534


def stand_for_root(
    monkeypatch: pytest.MonkeyPatch, *, me: int | None = None, my_group: int | None = None
) -> set[int]:
    """Unprivileged, our own files stand for root's in the trust walk, and the files whose
    inodes the caller adds to the returned set stand for another user's: `is_safe`'s mode
    rules still apply. As root (and ME not given) nothing changes: the files are root's."""
    foreign: set[int] = set()
    if me is None and os.geteuid() == 0:
        return foreign
    me = os.geteuid() if me is None else me
    my_group = os.getegid() if my_group is None else my_group
    real = trust.is_safe

    def as_root(st: os.stat_result) -> bool:
        fields = list(st)
        fields[4] = NOBODY if st.st_ino in foreign else (0 if st.st_uid == me else st.st_uid)
        fields[5] = 0 if st.st_gid == my_group else st.st_gid
        return real(os.stat_result(fields))

    # What the trust walk (first_unsafe) and the cache's reader call, for check, the
    # generator and reserve alike.
    monkeypatch.setattr(trust, "is_safe", as_root)
    return foreign


# Linux's default ephemeral range with nothing reserved; the tests' ports stay below it
# unless a test is about the ephemeral range.
DEFAULT_LOCAL_PORTS = LocalPorts((32768, 60999), PortSet())


def position(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the NTH occurrence of NEEDLE in TEXT: an oracle for locations."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def only(findings: Iterable[Finding], rule: str | None = None) -> Finding:
    """The single finding (of RULE, when given); fails the test when there is not exactly one."""
    chosen = [f for f in findings if rule is None or f.rule == rule]
    assert len(chosen) == 1, "\n".join(str(f) for f in findings) or "no findings"
    return chosen[0]


def describe(findings: Iterable[Finding]) -> str:
    return "\n".join(str(f) for f in findings) or "no findings"


@dataclass
class Registry:
    """Registry files written into one directory, with their text kept for location oracles."""

    root: Path

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def at(self, name: str, needle: str, nth: int = 0) -> tuple[int, int]:
        return position((self.root / name).read_text(encoding="utf-8"), needle, nth)

    def where(self, name: str, needle: str, nth: int = 0) -> str:
        """`path:line:col` of NEEDLE, as messages name a place."""
        line, column = self.at(name, needle, nth)
        return f"{self.root / name}:{line}:{column}"

    def load(self, *names: str) -> LoadResult:
        paths = [self.root / n for n in names]
        return load(RegistrySource(paths[0], tuple(paths[1:])))

    def lint(
        self, *names: str, local_ports: LocalPorts | None = DEFAULT_LOCAL_PORTS
    ) -> tuple[Finding, ...]:
        return check_registry(self.load(*names), local_ports)

    def lint_text(
        self, text: str, local_ports: LocalPorts | None = DEFAULT_LOCAL_PORTS
    ) -> tuple[Finding, ...]:
        self.write("registry.yaml", text)
        return self.lint("registry.yaml", local_ports=local_ports)


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path)


# --- the rule catalogue in tests/data/rules: each bad file says what lint must report --------

_EXPECT = re.compile(r"^# expect: (error|warning) (\S+) (\d+):(\d+) (.+)$")


@dataclass(frozen=True)
class Expected:
    severity: Severity
    rule: str
    line: int
    column: int
    message: str  # a part of the message; `{dir}` stands for the file's directory

    def matches(self, finding: Finding, path: Path) -> bool:
        return (
            finding.severity is self.severity
            and finding.rule == self.rule
            and finding.location.path == str(path)
            and (finding.location.line, finding.location.column) == (self.line, self.column)
            and self.message.format(dir=path.parent) in finding.message
        )


def expectations(path: Path) -> list[Expected]:
    """The `# expect: SEVERITY RULE LINE:COL MESSAGE-PART` lines at the top of a rule file."""
    expected = []
    for raw in path.read_bytes().splitlines():
        match = _EXPECT.match(raw.decode("utf-8", "replace"))
        if match is None:
            break
        severity, rule, line, column, message = match.groups()
        expected.append(Expected(Severity(severity), rule, int(line), int(column), message))
    return expected


BAD_RULE_FILES = sorted(p for p in RULES.glob("*.yaml") if not p.name.startswith("good-"))
GOOD_RULE_FILES = [DESIGN_EXAMPLE, *sorted(RULES.glob("good-*.yaml"))]

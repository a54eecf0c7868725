"""README.md is a front door (≤ 250 lines), and nothing it held before was lost: each section
heading of the README as it stood before the split (issue 28) is a heading now in the file
beside what it describes, or in a man page."""

import re
from pathlib import Path

import pytest

from tests.conftest import CHECKOUT, INSTALLED

pytestmark = pytest.mark.skipif(INSTALLED, reason="the docs are the checkout's; the package "
                                "ships the man pages alone")  # fmt: skip

MAX_LINES = 250
DOCS = ("README.md", "tests/README.md", "bench/README.md", "src/portguard/README.md",
        "packaging/README.md")  # fmt: skip
MAN_PAGES = ("packaging/portguard.8.scd", "packaging/portguard-registry.5.scd",
             "packaging/portguard-generator.8.scd")  # fmt: skip
# The README's headings before the split, frozen: (level, text).
BEFORE = [
    (1, "portguard"),
    (2, "The two commands"),
    (3, "The package test"),
    (3, "Real Podman"),
    (3, "Real Debian daemons"),
    (3, "Against the kernel"),
    (2, "Installing"),
    (2, "Guarding a unit"),
    (3, "`portguard-generator` (systemd.generator(7))"),
    (3, "How the guard runs"),
    (2, "The registry"),
    (3, "Editors and CI"),
    (2, "Commands"),
    (
        3,
        "`portguard lint [FILE...] [--whole] [--ephemeral-range LOW-HIGH|host|none] "
        "[--target-version X.Y] [--json]`",
    ),
    (3, "`portguard check [UNIT] [--json]`"),
    (3, "`portguard why PORT[/PROTO] [--address A] [--netns NAME|PID] [--json]`"),
    (3, "`portguard audit [--format text|json|prometheus] [--unregistered]`"),
    (4, "Alerting"),
    (3, "`portguard init`"),
    (3, "`portguard reserve [--apply]`"),
    (
        3,
        "`portguard wait PORT[/PROTO]... [--address A] [--timeout SPAN] [--no-reuseaddr] [--json]`",
    ),
    (2, "Speed"),
    (2, "Layout"),
]


def headings(path: Path) -> set[str]:
    """The text of each heading outside code blocks (markdown's `#`, scdoc's too)."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#+ (.+)", line)):
            found.add(match[1].strip())
    return found


def test_the_readme_is_a_front_door() -> None:
    lines = (CHECKOUT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES
    text = "\n".join(lines)
    # What a new user needs from it alone: install, the two commands, a registry, the exits.
    for needed in ("apt-get install", "pip install", "make demo", "make test", "version: 1",
                   "| `held` | 69 |", "| `exhausted` | 69 |", "portguard why"):  # fmt: skip
        assert needed in text, needed
    for doc in DOCS[1:]:
        assert f"]({doc})" in text, f"README does not link {doc}"


def test_every_heading_of_the_old_readme_lives_on() -> None:
    everywhere = set().union(*(headings(CHECKOUT / p) for p in (*DOCS, *MAN_PAGES)))
    lost = [text for _, text in BEFORE if text not in everywhere]
    assert lost == []

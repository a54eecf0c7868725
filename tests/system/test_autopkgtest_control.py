"""The reading of debian/tests/control by the package test's autopkgtest runner."""

from __future__ import annotations

import textwrap

from tests.system.autopkgtest import PackageTest, alternatives, parse_control, stanzas

CONTROL = textwrap.dedent(
    """\
    # A comment before the first stanza.
    Tests: unit, smoke
    Depends: @,
     python3-pytest (>= 7),
    # a comment inside a stanza
     python3-hypothesis [amd64] | python3-hypothesis-dev <!nocheck>
    Restrictions: allow-stderr
     needs-root

    Test-Command: portguard --version
    Features: test-name=version

    Tests: other
    Tests-Directory: t
    """
)


def test_stanzas_join_continuation_lines_and_skip_comments() -> None:
    first = stanzas(CONTROL)[0]
    assert first["tests"] == "unit, smoke"
    assert first["restrictions"] == "allow-stderr\nneeds-root"
    assert len(stanzas(CONTROL)) == 3


def test_tests_and_test_commands_become_commands_from_the_source_tree() -> None:
    unit, smoke, command, other = parse_control(CONTROL)
    assert unit == PackageTest(
        "unit",
        ("debian/tests/unit",),
        unit.depends,
        frozenset({"allow-stderr", "needs-root"}),
    )
    assert smoke.argv == ("debian/tests/smoke",)
    assert command.name == "command2"
    assert command.argv == ("sh", "-c", "portguard --version")
    assert command.depends == "@"
    assert command.restrictions == frozenset()
    assert other.argv == ("t/other",)


def test_depends_are_names_without_versions_architectures_or_profiles() -> None:
    unit = parse_control(CONTROL)[0]
    assert alternatives(unit.depends) == [
        ["@"],
        ["python3-pytest"],
        ["python3-hypothesis", "python3-hypothesis-dev"],
    ]
    assert alternatives("python3:any, ") == [["python3"]]

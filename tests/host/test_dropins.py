"""The guard drop-in's text: what systemd will read from it, whatever the unit's name."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portguard.host.dropins import GUARD, MARK, Blocking, dropin_text, guardable_problem


def directives(text: str) -> list[str]:
    """The lines systemd acts on: neither empty nor a comment (systemd.syntax(7))."""
    return [line for line in text.splitlines() if line.strip() and line[0] not in "#;"]


@pytest.mark.parametrize(
    ("unit", "section"),
    [
        ("myapp.service", "[Service]"),
        ("redis@.service", "[Service]"),
        ("redis@6379.service", "[Service]"),
        ("web.socket", "[Socket]"),
    ],
)
def test_one_section_and_one_guard_line(unit: str, section: str) -> None:
    text = dropin_text(unit, origin="written by a test")
    assert directives(text) == [section, "ExecStartPre=+/usr/bin/portguard check"]
    assert text.endswith("\n")


def test_header_names_the_unit_and_the_origin() -> None:
    lines = dropin_text("myapp.service", origin="written by a test").splitlines()
    assert lines[0] == f"{MARK} for myapp.service"
    assert lines[1] == "# written by a test"


def test_warn_mode_ignores_the_guards_failure() -> None:
    text = dropin_text("myapp.service", origin="o", blocking=Blocking.LOGS)
    assert directives(text) == ["[Service]", f"ExecStartPre=-+{GUARD} check"]


def test_the_guard_runs_with_full_privileges_and_takes_the_units_identity_by_its_args() -> None:
    """`+`: outside the exec sandbox, as root; the args say who the probe binds as
    (packaging/README.md)."""
    for blocking in Blocking:
        text = dropin_text("a.service", origin="o", blocking=blocking,
                           args=("--user", "redis", "--caps", "none"))  # fmt: skip
        line = directives(text)[1]
        command = line.removeprefix("ExecStartPre=").removeprefix(blocking.value)
        assert command == f"+{GUARD} check --user redis --caps none"


def test_the_guard_path_is_the_one_given() -> None:
    text = dropin_text("a.service", origin="o", guard="/usr/local/bin/portguard")
    assert directives(text)[1] == "ExecStartPre=+/usr/local/bin/portguard check"


@pytest.mark.parametrize(
    ("guard", "args"),
    [
        ("portguard", ()),
        ("/opt/my tools/portguard", ()),
        ("/usr/bin/portguard\nExecStart=/bin/evil", ()),
        ("/usr/bin/portguard", ("--user", "a b")),
        ("/usr/bin/portguard", ("--user", "%i")),
        ("/usr/bin/portguard", ("--user", "x\nExecStartPost=/bin/evil")),
        ("/usr/bin/portguard", ("; /bin/evil",)),
    ],
)
def test_a_guard_path_or_argument_outside_the_alphabet_is_refused(
    guard: str, args: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):
        dropin_text("a.service", origin="o", guard=guard, args=args)


@pytest.mark.parametrize(
    "unit",
    [
        "my\napp.service",
        "my\rapp.service",
        "a.service\n[Service]\nExecStartPre=/bin/evil",
        "%n.service",
        "a%i.service",
        "../etc.service",
        "a/b.service",
        "..",
        "my app.service",
        "a].service",
        "a=b.service",
        "a[b.service",
        "a;b.service",
        "a#b.service",
        "a$b.service",
        "",
        "myapp",
        "myapp.target",
        "myapp.timer",
        "myapp.mount",
    ],
)
def test_names_that_cannot_carry_the_guard_are_refused(unit: str) -> None:
    assert guardable_problem(unit) is not None
    with pytest.raises(ValueError, match=r"^'"):
        dropin_text(unit, origin="o")


@pytest.mark.parametrize("origin", ["two\nlines", "carriage\rreturn"])
def test_origin_is_one_line(origin: str) -> None:
    with pytest.raises(ValueError, match="one line"):
        dropin_text("a.service", origin=origin)


# Every character systemd allows in a unit name's prefix (unit-name.c VALID_CHARS, plus '@').
NAME_CHARS = st.sampled_from("abcXYZ019:-_.\\@")


@given(
    prefix=st.text(NAME_CHARS, min_size=1, max_size=40).filter(lambda p: not p.startswith("@")),
    kind=st.sampled_from(["service", "socket"]),
)
def test_any_valid_name_leaves_the_directives_alone(prefix: str, kind: str) -> None:
    unit = f"{prefix}.{kind}"
    assert guardable_problem(unit) is None
    text = dropin_text(unit, origin="o")
    assert directives(text) == [f"[{kind.capitalize()}]", f"ExecStartPre=+{GUARD} check"]
    # The name appears only in the comment, and no line continues onto the next.
    assert all(unit not in line for line in directives(text))
    assert not any(line.endswith("\\") for line in text.splitlines())
    assert "%" not in text

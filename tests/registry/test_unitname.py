"""systemd unit names by systemd's own rules (unit-name.c): validity, kinds, instances."""

import pytest

from portguard.registry.unitname import (
    UNIT_NAME_MAX,
    UnitNameKind,
    split_instance,
    unit_name_kind,
    unit_name_problem,
    unit_type,
)


@pytest.mark.parametrize(
    "name",
    [
        "nginx.service",
        "nginx.socket",
        "redis@.service",
        "redis@6379.service",
        "getty@tty1.service",
        "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
        "a:b_c-d.e.service",
        "user@1000.service",
        "foo@bar@baz.service",  # only the first '@' separates the instance
        "-.mount",  # the root mount
        "dev-sda1.device",
        "x.target",
        "a" * (UNIT_NAME_MAX - len(".service")) + ".service",
    ],
)
def test_valid_names(name: str) -> None:
    assert unit_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "a unit name cannot be empty"),
        ("nginx", "a unit name needs a type suffix such as .service or .socket"),
        (".service", "needs a type suffix"),
        ("nginx.", "'.' is not a unit type"),
        ("nginx.srvice", "'.srvice' is not a unit type (expected one of .automount, .device"),
        ("nginx.Service", "'.Service' is not a unit type"),
        ("nginx.service ", "'.service ' is not a unit type"),
        ("my app.service", "' ' not allowed in a unit name (letters, digits and :-_.\\@ only)"),
        ("my$app.service", "'$' not allowed"),
        ("a/b.service", "'/' not allowed"),
        ("café.service", "'é' not allowed"),
        ("a b$c.service", "' ', '$' not allowed"),
        ("@foo.service", "a unit name cannot start with '@'"),
        ("@.service", "cannot start with '@'"),
        ("a" * (UNIT_NAME_MAX - len(".service") + 1) + ".service", "at most 255 characters"),
    ],
)
def test_invalid_names(name: str, problem: str) -> None:
    found = unit_name_problem(name)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("nginx.service", UnitNameKind.PLAIN),
        ("redis@.service", UnitNameKind.TEMPLATE),
        ("redis@6379.service", UnitNameKind.INSTANCE),
        ("a@b@.service", UnitNameKind.INSTANCE),  # instance "b@"
        ("a@@.service", UnitNameKind.INSTANCE),
    ],
)
def test_kinds(name: str, kind: UnitNameKind) -> None:
    assert unit_name_kind(name) is kind


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("redis@6379.service", ("redis@.service", "6379")),
        ("pool@9000-9010.socket", ("pool@.socket", "9000-9010")),
        ("a@b@c.service", ("a@.service", "b@c")),
        ("getty@tty1.service", ("getty@.service", "tty1")),
        ("redis@.service", ("redis@.service", None)),
        ("nginx.service", ("nginx.service", None)),
    ],
)
def test_split_instance(name: str, split: tuple[str, str | None]) -> None:
    assert split_instance(name) == split


def test_unit_type() -> None:
    assert unit_type("nginx.service") == "service"
    assert unit_type("a.b.socket") == "socket"

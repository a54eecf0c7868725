"""The running kernel's local port settings as read from /proc/sys: read_local_ports."""

from pathlib import Path

import pytest

from portguard.host.sysctl import PORT_RANGE, RESERVED_PORTS, read_local_ports
from portguard.registry.localports import LocalPorts, PortSet


def _proc(tmp_path: Path, port_range: str | None, reserved: str | None) -> Path:
    for name, text in ((PORT_RANGE, port_range), (RESERVED_PORTS, reserved)):
        if text is not None:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
    return tmp_path


def test_read_local_ports(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "32768\t60999\n", "40000,50000-50010\n")
    assert read_local_ports(proc) == LocalPorts((32768, 60999), PortSet.parse("40000,50000-50010"))


def test_read_local_ports_with_nothing_reserved(tmp_path: Path) -> None:
    assert read_local_ports(_proc(tmp_path, "1024 65535\n", "\n")) == LocalPorts(
        (1024, 65535), PortSet()
    )


@pytest.mark.parametrize(
    ("port_range", "reserved"),
    [(None, ""), ("32768 60999", None), ("32768", ""), ("a b", ""), ("1 2", "x")],
)
def test_read_local_ports_gives_none_when_unreadable(
    tmp_path: Path, port_range: str | None, reserved: str | None
) -> None:
    assert read_local_ports(_proc(tmp_path, port_range, reserved)) is None


def test_read_local_ports_of_this_host_is_sane() -> None:
    local = read_local_ports()
    assert local is None or 1 <= local.ephemeral[0] <= local.ephemeral[1] <= 65535

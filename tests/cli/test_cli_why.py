"""`portguard why` as a command: its exit codes and one-line errors (the system tests show the
diagnoses themselves against real units)."""

import json
import socket
from pathlib import Path

import pytest

from portguard.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["why"], "the following arguments are required: PORT[/PROTO]"),
        (["why", "http"], "'http': expected PORT[/PROTO], a port from 1 to 65535"),
        (["why", "80/icmp"], "'80/icmp': the protocol is tcp or udp"),
        (["why", "80", "--address", "example.org"], "--address 'example.org' is not an IPv4"),
        (["why", "80", "--netns", "../x"], "--netns '../x': expected a name from 'ip netns'"),
        (["why", "80", "--netns", "pg-no-such-ns"], "no network namespace at /run/netns/pg-no-"),
    ],
)
def test_bad_input_is_one_line_and_exit_64(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 64
    err = capsys.readouterr().err
    assert err.startswith("portguard: ") and message in err, err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_occupied_port_exits_1_and_free_port_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against this machine's kernel: our own listener, then the same port closed."""
    registry = tmp_path / "none"
    sock = listening()
    port = sock.getsockname()[1]
    try:
        assert main(["why", f"{port}/tcp", "--registry", str(registry), "--json"]) == 1
        data = json.loads(capsys.readouterr().out)
        [occupant] = data["occupants"]
        assert [(s["state"], s["address"], s["port"]) for s in occupant["sockets"]] == [
            ("LISTEN", "127.0.0.1", port)
        ]
        assert data["registry_note"] == f"no registry at {registry}"
    finally:
        sock.close()
    assert main(["why", f"{port}/tcp", "--registry", str(registry)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{port}/tcp is free in this network namespace — no registry\n")


def test_broken_registry_does_not_stop_the_diagnosis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text("version: 1\nunits: [\n")
    assert main(["why", "9/udp", "--registry", str(registry)]) == 0
    out = capsys.readouterr().out.replace("\n           ", " ")  # rows wrapped at 100
    assert out.startswith("9/udp is free in this network namespace — registry not read\n")
    assert f"registry   the registry could not be used: registry invalid: {registry}:" in out

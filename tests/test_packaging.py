"""The files shipped for users are valid as shipped."""

from pathlib import Path

from portguard.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_example_registry_passes_lint() -> None:
    assert main(["lint", str(ROOT / "packaging" / "registry.example.yaml")]) == 0


def test_example_dropin_runs_the_guard() -> None:
    text = (ROOT / "systemd" / "50-portguard.conf").read_text()
    assert "[Service]\nExecStartPre=/usr/bin/python3 -m portguard check\n" in text

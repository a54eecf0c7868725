"""The command line as a whole: help, version, and the verbs it offers."""

import pytest

from portguard.cli import main


@pytest.mark.parametrize(
    "argv", [["--help"], ["lint", "--help"], ["check", "--help"], ["--version"]]
)
def test_help_and_version_return_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "portguard" in out


def test_no_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("portguard: ")

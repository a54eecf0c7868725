"""The command line as a whole: help, version, and the verbs it offers."""

import re
import subprocess
import sys

import pytest

from portguard.cli import VERBS, main
from tests.conftest import SRC


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


def test_the_top_level_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_an_unknown_verb_names_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chekc"]) == 64
    err = capsys.readouterr().err
    # Python 3.13's argparse lists the choices unquoted, 3.11's quoted.
    assert "invalid choice: 'chekc'" in err
    assert all(re.search(rf"\b{verb}\b", err.split("choose from", 1)[1]) for verb in VERBS)


def test_a_verb_builds_its_own_parser_alone() -> None:
    """A held `check` runs at a unit's start: the other verbs' options cost it time."""
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r}); "
            "from portguard.cli import build_parser; "
            "build_parser(['check', 'x.service']).parse_args(['check', 'x.service']); "
            "print(sorted(m for m in sys.modules if m.startswith('portguard.cli.'))); "
            "print('shutil' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    # argparse sizes its help by shutil, which brings bz2 and lzma; ours does not.
    assert done.stdout.split("\n")[:2] == ["['portguard.cli.check']", "False"]

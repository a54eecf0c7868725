"""The command line as a whole: help, version, and the verbs it offers."""

import re
import subprocess
import sys

import pytest

from portguard.cli import VERBS, main
from portguard.errors import Exit
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


# --- every verb's exit codes in its --help ---------------------------------------------------

ERRORS = {"UsageError": 64, "ConfigError": 78, "Unavailable": 69, "CannotWrite": 73,
          "Denied": 77, "Refused": 78}  # fmt: skip
# The modules whose exits a verb's run reaches beyond cli/VERB.py and commands/VERB.py: the
# registry's trust and validity (78) for every verb that reads one, and why's own helpers.
REACHES = {
    "check": ["commands/trusted.py", "policy/report.py"],
    "why": ["host/netns.py", "policy/diagnosis.py"],
    "audit": ["commands/trusted.py"],
    "reserve": ["commands/trusted.py"],
    "wait": ["commands/trusted.py", "policy/waiting.py"],
}


def listed_exit_codes(verb: str, capsys: pytest.CaptureFixture[str]) -> dict[int, str]:
    assert main([verb, "--help"]) == 0
    text = capsys.readouterr().out
    assert "\nexit status:\n" in text, f"{verb} --help lists no exit status"
    section = text.split("\nexit status:\n", 1)[1]
    rows = [re.match(r"^ +(\d+)  (\S.*)$", line) for line in section.splitlines()]
    assert all(rows), section
    return {int(row.group(1)): row.group(2) for row in rows if row}


def reached_exit_codes(verb: str) -> set[int]:
    """The codes a verb's own modules name: `Exit.X` and the errors they raise."""
    package = SRC / "portguard"
    codes = {0}
    for module in [f"cli/{verb}.py", f"commands/{verb}.py", *REACHES.get(verb, [])]:
        path = package / module
        source = path.read_text() if path.exists() else ""
        codes |= {int(Exit[name]) for name in re.findall(r"\bExit\.([A-Z]+)\b", source)}
        codes |= {code for error, code in ERRORS.items() if f"raise {error}(" in source}
    return codes


@pytest.mark.parametrize("verb", VERBS)
def test_every_help_ends_with_the_exit_codes_the_verb_can_end_with(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = listed_exit_codes(verb, capsys)
    assert {0, 64, 70} <= set(listed)  # success, a bad command line, a bug
    missing = reached_exit_codes(verb) - set(listed)
    assert not missing, f"{verb} --help does not list {sorted(missing)}"
    for code, meaning in listed.items():
        if code >= 64:  # sysexits: the name systemctl status shows
            assert meaning.endswith(f"({Exit(code).name})"), meaning


def test_the_exit_codes_the_help_once_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert {69} <= set(listed_exit_codes("audit", capsys))
    assert {64, 69, 77} <= set(listed_exit_codes("why", capsys))


@pytest.mark.parametrize(
    "argv", [["init", "--registry", "/etc/portguard"], ["dropin", "--registry", "x", "a.service"]]
)
def test_verbs_that_read_no_registry_take_no_registry_option(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 64
    assert "unrecognized arguments: --registry" in capsys.readouterr().err

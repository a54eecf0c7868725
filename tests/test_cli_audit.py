"""`portguard audit` as a user runs it: bad command lines, a missing or broken registry.
The audit itself, against a real kernel and systemd, is tests/system/test_audit.py's."""

import os
from pathlib import Path

import pytest

import portguard.audit
from portguard.cli import main
from tests.test_cli_lint import run


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("portguard: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args", [["--format", "xml"], ["--format"], ["--bogus"], ["8080"], ["--unregistered=yes"]]
)
def test_bad_command_lines_are_usage_errors(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = audit(capsys, *args)
    assert code == 64
    assert out == ""
    assert_one_line(err)


def test_help_names_the_formats(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = audit(capsys, "--help")
    assert code == 0
    assert "text,json,prometheus" in out.replace(" ", "")
    assert "--unregistered" in out


def test_json_is_format_json(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, str, bool]] = []

    def fake(registry: object, *, output: str, unregistered: bool) -> int:
        seen.append((registry, output, unregistered))
        return 0

    monkeypatch.setattr(portguard.audit, "run", fake)
    assert main(["audit", "--json", "--unregistered", "--registry", "/r"]) == 0
    assert main(["audit"]) == 0
    assert main(["audit", "--format", "prometheus"]) == 0
    assert seen == [(Path("/r"), "json", True), (None, "text", False), (None, "prometheus", False)]


@pytest.mark.parametrize("output", ["text", "json", "prometheus"])
def test_missing_registry_is_a_config_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, output: str
) -> None:
    missing = tmp_path / "nowhere"
    code, out, err = audit(capsys, "--registry", str(missing), "--format", output)
    assert code == 78
    assert out == ""
    assert err == f"portguard: no registry at {missing}\n"


def test_invalid_registry_is_a_config_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "registry.yaml").write_text(
        "version: 1\nunits:\n  web.service:\n    listen: [80000]\n"
    )
    code, out, err = audit(capsys, "--registry", str(tmp_path))
    assert code == 78
    assert out == ""
    assert "Traceback" not in err
    if os.geteuid() != 0:
        assert_one_line(err)  # a file of the user's own is not trusted in the first place
        return
    # One line, and the hint where to look next.
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"portguard: registry invalid: {tmp_path}/registry.yaml:4:14:")
    assert "port 80000 is out of range" in lines[0]
    assert lines[1] == "portguard: hint: run 'portguard lint'"


def test_untrusted_registry_is_a_config_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("version: 1\nunits: {}\n")
    path.chmod(0o666)
    code, out, err = audit(capsys, "--registry", str(path))
    assert code == 78
    assert out == ""
    assert err == f"portguard: {path}: writable by a user other than root, so it is not trusted\n"


def test_the_installed_entry_point(tmp_path: Path) -> None:
    """Through `python3 -m portguard`, as a timer unit runs it."""
    missing = tmp_path / "nowhere"
    completed = run("audit", "--registry", str(missing), "--format", "prometheus")
    assert completed.returncode == 78
    assert completed.stdout == ""
    assert completed.stderr == f"portguard: no registry at {missing}\n"

"""`portguard audit` as a user runs it: bad command lines, a missing or broken registry.
The audit itself, against a real kernel and systemd, is tests/system/test_audit.py's."""

import os
from pathlib import Path

import pytest

import portguard.commands.audit
from portguard.cli import main
from tests.cli.test_cli_lint import run
from tests.commands.test_audit import SQUATTER, Fakes, facts, held
from tests.conftest import Registry as RegistryFiles
from tests.prometheus_text import parse


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("portguard: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [["--format", "xml"], ["--format"], ["--bogus"], ["8080"], ["--unregistered=yes"],
     ["--output"], ["--output", ""]],
)  # fmt: skip
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
    seen: list[tuple[object, str, bool, Path | None]] = []

    def fake(registry: object, *, output: str, unregistered: bool, destination: Path | None) -> int:
        seen.append((registry, output, unregistered, destination))
        return 0

    monkeypatch.setattr(portguard.commands.audit, "run", fake)
    assert main(["audit", "--json", "--unregistered", "--registry", "/r"]) == 0
    assert main(["audit"]) == 0
    assert main(["audit", "--format", "prometheus", "--output", "/d/p.prom"]) == 0
    assert seen == [
        (Path("/r"), "json", True, None),
        (None, "text", False, None),
        (None, "prometheus", False, Path("/d/p.prom")),
    ]


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
    assert err == (
        f"portguard: {path}: writable by a user other than root, so it is not trusted "
        f"(fix: chown root:root {path}; chmod go-w {path})\n"
    )


def test_the_installed_entry_point(tmp_path: Path) -> None:
    """Through `python3 -m portguard`, as a timer unit runs it."""
    missing = tmp_path / "nowhere"
    completed = run("audit", "--registry", str(missing), "--format", "prometheus")
    assert completed.returncode == 78
    assert completed.stdout == ""
    assert completed.stderr == f"portguard: no registry at {missing}\n"


# --- --output -----------------------------------------------------------------------------------


@pytest.fixture
def drift(monkeypatch: pytest.MonkeyPatch, reg: RegistryFiles) -> None:
    """audit's outside world replaced: a registry whose one claim is squatted."""
    reg.write("registry.yaml", "version: 1\nunits:\n  web.service:\n    listen: [8080/tcp]\n")
    loaded = reg.load("registry.yaml").registry
    fakes = Fakes(holdings=[held(SQUATTER, 8080)], known=facts("web.service"))
    monkeypatch.setattr(portguard.commands.audit, "load", lambda path: loaded)
    monkeypatch.setattr(portguard.commands.audit, "real_sources", fakes.sources)


@pytest.mark.usefixtures("drift")
def test_output_writes_the_metrics_and_keeps_the_drift_exit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "portguard.prom"
    code, out, err = audit(capsys, "--format", "prometheus", "--output", str(target))
    assert code == 1
    assert out == ""
    assert err == "portguard: not found out: a gap\n"
    families = parse(target.read_text())
    [claim] = families["portguard_claim"].samples
    assert (claim.labels["status"], claim.labels["holder"]) == ("squatted", "squatter.service")


@pytest.mark.usefixtures("drift")
def test_output_into_a_missing_directory_is_73_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "portguard.prom"
    code, out, err = audit(capsys, "--format", "prometheus", "--output", str(target))
    assert code == 73
    assert out == ""
    # The gap line, then the one line that says what went wrong.
    assert err.splitlines() == [
        "portguard: not found out: a gap",
        f"portguard: cannot write {target}: directory {target.parent} does not exist",
    ]
    assert "Traceback" not in err


@pytest.mark.usefixtures("drift")
def test_output_that_cannot_be_renamed_is_73_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "portguard.prom"
    target.mkdir()
    code, out, err = audit(capsys, "--output", str(target))
    assert code == 73
    assert out == ""
    assert err.splitlines()[-1] == f"portguard: cannot write {target}: Is a directory"
    assert len(err.splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portguard.prom", "registry.yaml"]


def test_a_registry_error_leaves_the_output_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """78 is a failure of the run: the last good metrics stay, and their age shows it."""
    target = tmp_path / "portguard.prom"
    target.write_text("old\n")
    missing = tmp_path / "nowhere"
    code, out, err = audit(capsys, "--registry", str(missing), "--output", str(target))
    assert code == 78
    assert out == ""
    assert err == f"portguard: no registry at {missing}\n"
    assert target.read_text() == "old\n"

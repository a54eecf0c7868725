"""`portguard lint` as a user runs it: output lines, --json, exit codes, hostile input."""

import json
import os
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import portguard
import portguard.host.sysctl
import portguard.registry.entries
import portguard.registry.lint
from portguard.cli import main
from portguard.host.sysctl import read_local_ports
from portguard.registry.findings import Severity
from portguard.registry.localports import LocalPorts, PortSet
from tests.conftest import (
    BAD_RULE_FILES,
    CHECKOUT,
    DEFAULT_LOCAL_PORTS,
    DESIGN_EXAMPLE,
    GOOD_RULE_FILES,
    SRC,
    Registry,
    expectations,
)


@pytest.fixture(autouse=True)
def _kernel_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same ephemeral range whatever host runs the tests (subprocesses read the real one)."""
    monkeypatch.setattr(portguard.host.sysctl, "read_local_ports", lambda: DEFAULT_LOCAL_PORTS)


def lint(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["lint", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`/usr/bin/python3 -m portguard ...` from the checkout, as Debian runs it."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        ["/usr/bin/python3", "-m", "portguard", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=CHECKOUT,
        timeout=60,
        check=False,
    )


# --- every rule through the command --------------------------------------------------------


@pytest.mark.parametrize("path", BAD_RULE_FILES, ids=lambda p: p.stem)
def test_bad_file_prints_located_findings_and_exit_code(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    code, out, err = lint(capsys, str(path))
    expected = expectations(path)
    lines = out.splitlines()
    assert len(lines) == len(expected), out
    for want in expected:
        prefix = f"{path}:{want.line}:{want.column}: {want.severity}: "
        assert any(
            line.startswith(prefix)
            and line.endswith(f" [{want.rule}]")
            and want.message.format(dir=path.parent) in line
            for line in lines
        ), f"{prefix}...[{want.rule}] not in:\n{out}"
    has_error = any(want.severity is Severity.ERROR for want in expected)
    assert code == (78 if has_error else 0)
    verdict = "invalid" if has_error else "valid"
    assert err.startswith(f"{verdict}: ")
    assert "Traceback" not in out + err


@pytest.mark.parametrize("path", GOOD_RULE_FILES, ids=lambda p: p.stem)
def test_good_file_exits_zero(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, out, err = lint(capsys, str(path))
    assert (code, out) == (0, "")
    assert err.startswith("valid: ") and ", 0 errors, 0 warnings" in err


def test_design_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint(capsys, str(DESIGN_EXAMPLE)) == (
        0,
        "",
        "valid: 3 units in 1 file, 0 errors, 0 warnings\n",
    )


def test_summary_counts_errors_and_warnings(
    capsys: pytest.CaptureFixture[str], reg: Registry
) -> None:
    path = reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          a.service: {listen: [80/tcp, 127.0.0.1:80/tcp]}
          b.service: {listen: [0/tcp]}
        """,
    )
    code, out, err = lint(capsys, str(path))
    assert code == 78
    assert out.splitlines() == [
        f"{path}:3:32: warning: 127.0.0.1:80/tcp overlaps a.service's own 80/tcp at {path}:3:24: "
        "the service's second bind would fail with EADDRINUSE [overlap-self]",
        f"{path}:4:24: error: '0/tcp': port 0 is out of range (expected 1-65535) [listen]",
    ]
    assert err == "invalid: 2 units in 1 file, 1 error, 1 warning\n"


def test_warnings_keep_exit_zero(capsys: pytest.CaptureFixture[str], reg: Registry) -> None:
    path = reg.write("registry.yaml", "version: 1\nunits:\n  a.service:\n    listen: [40000/udp]\n")
    code, out, err = lint(capsys, "--ephemeral-range", "host", str(path))
    assert code == 0
    assert out.startswith(f"{path}:4:14: warning: a.service: port 40000 of 40000/udp is in the")
    assert out.rstrip().endswith("[ephemeral]")
    assert err == "valid: 1 unit in 1 file, 0 errors, 1 warning\n"


def test_reserved_port_does_not_warn(
    capsys: pytest.CaptureFixture[str], reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = LocalPorts((32768, 60999), PortSet.parse("40000"))
    monkeypatch.setattr(portguard.host.sysctl, "read_local_ports", lambda: local)
    path = reg.write("registry.yaml", "version: 1\nunits:\n  a.service:\n    listen: [40000/udp]\n")
    assert lint(capsys, "--ephemeral-range", "host", str(path))[:2] == (0, "")


IN_THE_RANGE = "version: 1\nunits:\n  a.service:\n    listen: [40000/udp]\n"


def _no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("lint read this machine's sysctl")

    monkeypatch.setattr(portguard.host.sysctl, "read_local_ports", refuse)


def test_files_given_are_not_judged_by_this_machines_range(
    capsys: pytest.CaptureFixture[str], reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off the host (a config repository's CI), this machine's range says nothing."""
    _no_host(monkeypatch)
    path = reg.write("registry.yaml", IN_THE_RANGE)
    assert lint(capsys, str(path))[:2] == (0, "")
    assert lint(capsys, str(reg.root))[:2] == (0, "")
    assert lint(capsys, "--ephemeral-range", "none", str(path))[:2] == (0, "")


def test_a_given_range_is_judged_without_this_machine(
    capsys: pytest.CaptureFixture[str], reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_host(monkeypatch)
    path = reg.write("registry.yaml", IN_THE_RANGE)
    code, out, _ = lint(capsys, "--ephemeral-range", "32768-60999", str(path))
    assert code == 0
    assert "port 40000 of 40000/udp is in the ephemeral range 32768-60999" in out
    assert lint(capsys, "--ephemeral-range", "41000-42000", str(path))[:2] == (0, "")


def test_the_installed_registry_is_judged_by_this_hosts_range(
    capsys: pytest.CaptureFixture[str], reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.write("registry.yaml", IN_THE_RANGE)
    monkeypatch.setattr(portguard.registry.entries, "REGISTRY_DIR", reg.root)
    code, out, _ = lint(capsys)
    assert code == 0 and "[ephemeral]" in out
    assert lint(capsys, "--ephemeral-range", "none")[:2] == (0, "")


@pytest.mark.parametrize("value", ["60999-32768", "0-10", "1-65536", "x", "1000", "-5", ""])
def test_a_bad_ephemeral_range_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code, out, err = lint(capsys, f"--ephemeral-range={value}", "x.yaml")
    assert (code, out) == (64, "")
    assert err.startswith("portguard: argument --ephemeral-range: ") and len(err.splitlines()) == 1


def test_whole_lints_each_changed_files_registry_once(
    capsys: pytest.CaptureFixture[str], reg: Registry
) -> None:
    """What pre-commit passes (changed files) stands for the registries they are part of,
    so an overlap with an unchanged file is still seen."""
    web = reg.write("web/registry.yaml", "version: 1\nunits:\n  a.service: {listen: [80]}\n")
    dropin = reg.write(
        "web/registry.d/10-b.yaml", "version: 1\nunits:\n  b.service: {listen: [80]}\n"
    )
    db = reg.write("db/registry.d/10-c.yaml", "version: 1\nunits:\n  c.service: {listen: [81]}\n")
    code, out, err = lint(capsys, "--whole", str(dropin), str(web), str(db))
    assert code == 78
    assert out.splitlines() == [
        f"{dropin}:3:24: error: b.service claims 80/tcp, which overlaps 80/tcp claimed by "
        f"a.service at {web}:3:24 (give one of them another port, or list one in the other's "
        "'via') [overlap]"
    ]
    assert err.splitlines() == [
        "invalid: 2 units in 2 files, 1 error, 0 warnings",
        "valid: 1 unit in 1 file, 0 errors, 0 warnings",
    ]
    code, out, _ = lint(capsys, "--whole", "--json", str(db), str(dropin))
    assert code == 78
    assert [(r["files"], r["valid"]) for r in json.loads(out)] == [
        ([str(db)], True), ([str(web), str(dropin)], False),
    ]  # fmt: skip


def test_several_files_and_cross_file_findings(
    capsys: pytest.CaptureFixture[str], reg: Registry
) -> None:
    main_file = reg.write("main.yaml", "version: 1\nunits:\n  web.service: {listen: [80]}\n")
    other = reg.write(
        "other.yaml",
        "version: 1\nunits:\n  web.service: {listen: [81]}\n  api.service: {listen: [80/tcp]}\n",
    )
    code, out, err = lint(capsys, str(main_file), str(other))
    assert code == 78
    assert out.splitlines() == [
        f"{other}:3:3: error: web.service is already defined at {main_file}:3:3 [duplicate-unit]",
        f"{other}:4:26: error: api.service claims 80/tcp, which overlaps 80/tcp claimed by "
        f"web.service at {main_file}:3:26 (give one of them another port, or list one in the "
        "other's 'via') [overlap]",
    ]
    assert err == "invalid: 2 units in 2 files, 2 errors, 0 warnings\n"


# --- registry directories and missing or odd paths -----------------------------------------


def _installed(reg: Registry) -> None:
    reg.write(
        "registry.yaml", "version: 1\ndefaults: {mode: warn}\nunits:\n  a.service: {listen: [80]}\n"
    )
    reg.write("registry.d/10-b.yaml", "version: 1\nunits:\n  b.service: {listen: [81]}\n")


def test_directory_argument_is_a_registry_root(
    capsys: pytest.CaptureFixture[str], reg: Registry
) -> None:
    _installed(reg)
    assert lint(capsys, str(reg.root)) == (
        0,
        "",
        "valid: 2 units in 2 files, 0 errors, 0 warnings\n",
    )


def test_registry_option(capsys: pytest.CaptureFixture[str], reg: Registry) -> None:
    _installed(reg)
    reg.write("registry.d/20-c.yaml", "version: 1\nunits:\n  c.service: {listen: [81]}\n")
    code, out, _ = lint(capsys, "--registry", str(reg.root))
    assert code == 78
    assert out.startswith(
        f"{reg.root / 'registry.d/20-c.yaml'}:3:24: error: c.service claims 81/tcp"
    )


def test_empty_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = lint(capsys, str(tmp_path))
    assert code == 78
    missing = tmp_path / "registry.yaml"
    assert out == f"{missing}: error: cannot read: No such file or directory [unreadable]\n"
    assert err.startswith("invalid: ")


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, out, _ = lint(capsys, str(path))
    assert (code, out) == (
        78,
        f"{path}: error: cannot read: No such file or directory [unreadable]\n",
    )


def test_directory_among_files(capsys: pytest.CaptureFixture[str], reg: Registry) -> None:
    good = reg.write("a.yaml", "version: 1\n")
    (reg.root / "d.yaml").mkdir()
    code, out, _ = lint(capsys, str(good), str(reg.root / "d.yaml"))
    assert (code, out) == (
        78,
        f"{reg.root / 'd.yaml'}: error: cannot read: Is a directory [unreadable]\n",
    )


@pytest.mark.parametrize("content", [b"", b"\n", b"# nothing yet\n"], ids=repr)
def test_empty_file(capsys: pytest.CaptureFixture[str], reg: Registry, content: bytes) -> None:
    path = reg.write("registry.yaml", content)
    code, out, _ = lint(capsys, str(path))
    assert code == 78
    assert (
        out == f"{path}: error: the file is empty (expected a mapping with 'version: 1') [empty]\n"
    )


@pytest.mark.parametrize(
    ("content", "where", "rule"),
    [
        (bytes(range(256)), "2:118", "encoding"),  # 0x80, after the \n at 0x0a
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "1:1", "yaml"),
        (b"version: 1\nunits:\n  \x89PNG\r\n\x1a\n", "3:3", "encoding"),
        (b"\x1f\x8b\x08\x00", "1:2", "encoding"),  # gzip
    ],
)
def test_binary_garbage(
    capsys: pytest.CaptureFixture[str], reg: Registry, content: bytes, where: str, rule: str
) -> None:
    path = reg.write("registry.yaml", content)
    code, out, err = lint(capsys, str(path))
    assert code == 78
    assert out.startswith(f"{path}:{where}: error: ")
    assert out.rstrip().endswith(f"[{rule}]")
    assert "Traceback" not in out + err


# --- --json ----------------------------------------------------------------------------------


def test_json_output(capsys: pytest.CaptureFixture[str], reg: Registry) -> None:
    path = reg.write(
        "registry.yaml",
        "version: 1\nunits:\n  a.service:\n    listen: [80, 80/sctp, 40000/udp]\n    lisen: []\n",
    )
    code, out, err = lint(capsys, "--json", "--ephemeral-range=host", str(path))
    assert (code, err) == (78, "")
    data = json.loads(out)
    assert data["valid"] is False
    assert data["files"] == [str(path)]
    assert data["units"] == 1
    assert data["findings"] == [
        {
            "severity": "error",
            "file": str(path),
            "line": 4,
            "column": 21,
            "rule": "listen",
            "message": "'80/sctp': unknown protocol 'sctp' (expected tcp or udp)",
        },
        {
            "severity": "warning",
            "file": str(path),
            "line": 4,
            "column": 27,
            "rule": "ephemeral",
            "message": data["findings"][1]["message"],
        },
        {
            "severity": "error",
            "file": str(path),
            "line": 5,
            "column": 5,
            "rule": "unknown-key",
            "message": "unknown key 'lisen' in unit a.service (did you mean 'listen'?)",
        },
    ]
    assert "40000 of 40000/udp is in the ephemeral range" in data["findings"][1]["message"]


def test_json_lists_every_member_of_an_overlapping_group(
    capsys: pytest.CaptureFixture[str], reg: Registry
) -> None:
    """The message names the first three claims of a group; --json has them all."""
    units = "".join(f"  u{n}.service: {{listen: [8080/tcp]}}\n" for n in range(5))
    path = reg.write("registry.yaml", f"version: 1\nunits:\n{units}")
    code, out, _ = lint(capsys, "--json", str(path))
    assert code == 78
    [finding] = json.loads(out)["findings"]
    assert (finding["rule"], finding["line"], finding["column"]) == ("overlap", 4, 25)
    assert finding["message"].startswith("5 claims of 5 units overlap, each with one at least: ")
    assert finding["message"].count(f" at {path}:") == 3
    assert " and 2 more (" in finding["message"]
    assert finding["members"] == [
        {"unit": f"u{n}.service", "claim": "8080/tcp", "file": str(path), "line": 3 + n,
         "column": 25}
        for n in range(5)
    ]  # fmt: skip


def test_json_output_when_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = lint(capsys, str(DESIGN_EXAMPLE), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "valid": True,
        "files": [str(DESIGN_EXAMPLE)],
        "units": 3,
        "findings": [],
    }


def test_json_output_for_an_unreadable_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = lint(capsys, "--json", str(tmp_path / "nope.yaml"))
    assert code == 78
    finding = json.loads(out)["findings"][0]
    assert (finding["line"], finding["column"], finding["rule"]) == (0, 0, "unreadable")


# --- the command line itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lint", "--bogus"], "unrecognized arguments: --bogus"),
        (["lint", "--registry"], "argument --registry: expected one argument"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
        (["--jsonn", "lint"], "unrecognized arguments: --jsonn"),
    ],
)
def test_usage_errors_exit_64_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 64
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("portguard: ") and message in err
    assert "--help" in err


def test_internal_errors_are_one_line_and_exit_70(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, reg: Registry
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(portguard.registry.lint, "check_registry", broken)
    path = reg.write("registry.yaml", "version: 1\n")
    code, out, err = lint(capsys, str(path))
    assert (code, out) == (70, "")
    assert err == "portguard: internal error: RuntimeError: boom (a bug; rerun with --debug)\n"


# --- properties ----------------------------------------------------------------------------


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.sampled_from(GOOD_RULE_FILES + BAD_RULE_FILES)
        .map(Path.read_bytes)
        .flatmap(lambda data: st.integers(0, len(data)).map(lambda cut: data[:cut])),
    )
)
def test_any_bytes_give_0_or_78_and_no_traceback(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "registry.yaml"
    path.write_bytes(data)
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["lint", str(path)])
        json_code = main(["lint", "--json", str(path)])
    assert code in (0, 78)
    assert json_code == code
    assert "Traceback" not in out.getvalue() + err.getvalue()
    assert "internal error" not in err.getvalue()


# --- a real process, as Debian runs it -----------------------------------------------------


def test_subprocess_design_example() -> None:
    done = run("lint", str(DESIGN_EXAMPLE))
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr == "valid: 3 units in 1 file, 0 errors, 0 warnings\n"


def test_subprocess_bad_file() -> None:
    path = BAD_RULE_FILES[0]
    done = run("lint", str(path))
    want = expectations(path)[0]
    assert done.returncode == 78
    assert done.stdout.startswith(f"{path}:{want.line}:{want.column}: error: ")
    assert "Traceback" not in done.stderr


def test_subprocess_relative_path_and_json() -> None:
    done = run("lint", "--json", "tests/data/rules/port-zero.yaml")
    assert done.returncode == 78
    [finding] = json.loads(done.stdout)["findings"]
    assert finding == {
        "severity": "error",
        "file": "tests/data/rules/port-zero.yaml",
        "line": 5,
        "column": 14,
        "rule": "listen",
        "message": "'0/tcp': port 0 is out of range (expected 1-65535)",
    }


def test_subprocess_garbage_and_nesting(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(os.urandom(4096) + b"\xff")
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000)  # libyaml's composer would overflow the C stack
    for path in (garbage, deep):
        done = run("lint", str(path))
        assert done.returncode == 78, done.stderr
        assert done.stdout.startswith(f"{path}:")
        assert "Traceback" not in done.stderr


def test_subprocess_usage_error() -> None:
    done = run("lint", "--bogus")
    assert done.returncode == 64
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("portguard: unrecognized arguments: --bogus")


def test_subprocess_unknown_verb() -> None:
    done = run("frobnicate")
    assert (done.returncode, done.stdout) == (64, "")
    assert done.stderr.startswith("portguard: argument COMMAND: invalid choice: 'frobnicate'")
    assert len(done.stderr.splitlines()) == 1


def test_subprocess_ephemeral_warning_from_the_real_kernel(tmp_path: Path) -> None:
    """The real process reads this host's ip_local_port_range; pick a port inside it."""
    local = read_local_ports()
    assert local is not None, "this host's /proc/sys/net/ipv4 is not readable"
    low, high = local.ephemeral
    port = next(p for p in range(low, high + 1) if local.unprotected(p, p).ranges)
    path = tmp_path / "registry.yaml"
    path.write_text(f"version: 1\nunits:\n  a.service:\n    listen: [{port}/tcp]\n")
    done = run("lint", "--ephemeral-range", "host", str(path))
    assert done.returncode == 0
    assert done.stdout.startswith(f"{path}:4:14: warning: a.service: port {port} of {port}/tcp")
    assert done.stderr == "valid: 1 unit in 1 file, 0 errors, 1 warning\n"


def test_python_m_uses_this_checkout() -> None:
    done = subprocess.run(
        ["/usr/bin/python3", "-c", "import portguard; print(portguard.__file__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=True,
    )
    assert done.stdout.strip() == str(SRC / "portguard" / "__init__.py")
    version = run("--version")
    assert (version.returncode, version.stdout) == (0, f"portguard {portguard.__version__}\n")


POOL = "version: 1\nunits:\n  coturn.service:\n    listen: [{port: 61000-65535/udp, pool: true}]\n"


def test_target_version_fails_a_registry_an_older_release_would_refuse(
    capsys: pytest.CaptureFixture[str], reg: Registry
) -> None:
    path = reg.write("registry.yaml", POOL)
    assert lint(capsys, str(path))[:2] == (0, "")
    code, out, err = lint(capsys, "--target-version", "0.1", str(path))
    assert code == 78 and out.endswith("[target-version]\n") and err.startswith("invalid: ")
    assert lint(capsys, "--target-version", "0.2.0", str(path))[:2] == (0, "")


@pytest.mark.parametrize("value", ["1", "0.0", "x.y", "", "0.", "-1.2"])
def test_a_bad_target_version_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], reg: Registry, value: str
) -> None:
    path = reg.write("registry.yaml", POOL)
    code, out, err = lint(capsys, "--target-version", value, str(path))
    assert (code, out) == (64, "")
    assert "is not a portguard release X.Y from 0.1 on" in err and "Traceback" not in err

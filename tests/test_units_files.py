"""The shipped unit files read as systemd reads them, checked against the code they run.
That systemd itself accepts them is tests/system/test_audit_timer.py's (`systemd-analyze verify`);
these checks also run where no sandbox can boot."""

import shlex
from pathlib import Path, PurePosixPath

import pytest

from portguard.cli import build_parser
from portguard.errors import Exit
from tests.conftest import shipped

SYSTEMD = shipped("systemd", "/lib/systemd/system")

Directives = dict[tuple[str, str], list[str]]


def directives(path: Path) -> Directives:
    """(section, key) -> every value in file order: systemd allows a key many times, and an
    empty assignment resets the list. Comments and blank lines are skipped; no continuations."""
    found: Directives = {}
    section = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: no continuation lines here"
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: {line}"
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        assert equals and section, f"{path.name}:{number}: not 'Key=value' in a section: {line}"
        values = found.setdefault((section, key.strip()), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return found


@pytest.fixture
def service() -> Directives:
    return directives(SYSTEMD / "portguard-audit.service")


def one(found: Directives, section: str, key: str) -> str:
    values = found.get((section, key), [])
    assert len(values) == 1, (section, key, values)
    return values[0]


def environment(found: Directives) -> dict[str, str]:
    return dict(v.partition("=")[::2] for v in found[("Service", "Environment")])


def test_exec_start_is_a_command_line_portguard_accepts(service: Directives) -> None:
    argv = shlex.split(one(service, "Service", "ExecStart"))
    assert argv[0] == "/usr/bin/portguard"
    expanded = [environment(service).get(a[2:-1], a) if a.startswith("${") else a for a in argv]
    args = build_parser().parse_args(expanded[1:])
    assert (args.verb, args.format) == ("audit", "prometheus")
    assert args.output == Path("/var/lib/prometheus/node-exporter/portguard.prom")


def test_drift_is_success_and_the_skip_is_not(service: Directives) -> None:
    success = {int(s) for v in service[("Service", "SuccessExitStatus")] for s in v.split()}
    assert success == {int(Exit.OCCUPIED)}
    # ExecCondition= skips on 1-254, unless the status counts as success: then the audit runs.
    condition = one(service, "Service", "ExecCondition")
    skip = int(condition.rstrip("'").rsplit("exit ", 1)[1])
    assert 1 <= skip <= 254 and skip not in success


def test_the_default_directory_is_the_writable_one(service: Directives) -> None:
    textfile = PurePosixPath(environment(service)["PORTGUARD_TEXTFILE"])
    assert one(service, "Service", "ReadWritePaths") == f"-{textfile.parent}"
    assert one(service, "Service", "EnvironmentFile") == "-/etc/default/portguard"
    assert one(service, "Service", "ProtectSystem") == "strict"
    # One capability: CAP_NET_ADMIN, for the NAT ruleset (the unit says why).
    assert service[("Service", "CapabilityBoundingSet")] == ["CAP_NET_ADMIN"]
    assert ("Service", "AmbientCapabilities") not in service
    assert ("Service", "PrivateNetwork") not in service  # the host's sockets are the point


def test_the_timer_starts_the_service_and_is_installable() -> None:
    timer = directives(SYSTEMD / "portguard-audit.timer")
    assert ("Timer", "Unit") not in timer  # the same name: portguard-audit.service
    assert one(timer, "Timer", "OnUnitActiveSec") == "5min"
    assert one(timer, "Install", "WantedBy") == "timers.target"

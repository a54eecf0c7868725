"""The .deb end to end, on fresh Debian roots (tools/roots) booted in a sandbox.

Per release: install it with apt (offline), let its generator guard two registered units, see
a squatter fail one start with the owner named in the journal and in the catalog's text, ask
`portguard why`, then purge it and find the root as it was. The package's autopkgtest runs in
a boot of its own. All of it on the release's own Python, pyroute2, pystemd and systemd.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import autopkgtest
from tests.system.debroot import (
    SUITES,
    Stopwatch,
    apt_get,
    built_package,
    differences,
    extracted,
    file_list,
    install,
    package_status,
    root_tarball,
    unavailable,
)
from tests.system.guarded import listener, wait_listening, write_registry
from tests.system.sandbox import PROJECT, Sandbox, boot
from tests.system.test_catalog import explained
from tests.system.test_check import guard_status
from tests.system.test_generator import GUARD, drop_in_paths, generated_dropin

HELD = "d12e92fae08c4a5791aebc7c159078ed"  # report.MESSAGE_ID[Verdict.HELD]
REGISTRY = """\
version: 1
units:
  api.service:
    listen: [8080/tcp]
    mode: enforce
  web.service:
    listen: [8081/tcp]
    mode: enforce
"""
UNITS = {"api.service": 8080, "web.service": 8081}
SQUATTER = "legacy-api.service"
SHIPPED_UNITS = ("portguard-reserve.service", "portguard-audit.service", "portguard-audit.timer")
INSTALLED = (
    "/usr/bin/portguard",
    "/usr/lib/systemd/system-generators/portguard-generator",
    "/usr/lib/systemd/catalog/portguard.catalog",
    "/usr/share/man/man8/portguard.8.gz",
    "/usr/share/man/man5/portguard-registry.5.gz",
    "/usr/share/man/man8/portguard-generator.8.gz",
    "/etc/portguard/registry.d/",
    "/usr/share/portguard/registry.schema.json",
    "/usr/share/doc/portguard/examples/portguard.rules.yml",
    "/usr/share/zsh/vendor-completions/_portguard",
)
VERSIONS = ("systemd", "python3", "python3-pyroute2", "python3-pystemd", "python3-yaml")


@pytest.fixture(scope="session")
def deb() -> Path:
    return built_package()


@pytest.fixture(scope="module", params=SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def root(suite: str, deb: Path) -> Iterator[Path]:
    """SUITE's cached root, extracted once per module (`deb` first: no package, no extraction)."""
    clock = Stopwatch(suite)
    with extracted(root_tarball(suite)) as directory:
        clock.split("extract")
        yield directory


@pytest.fixture
def booted(suite: str, root: Path) -> Iterator[Sandbox]:
    clock = Stopwatch(suite)
    with boot(lowerdir=root) as sandbox:
        clock.split("boot")
        versions = sandbox.run("dpkg-query", "-W", *VERSIONS).stdout
        print(f"{suite}: " + ", ".join(line.replace("\t", " ") for line in versions.splitlines()))
        yield sandbox


def unit_state(sandbox: Sandbox, verb: str, unit: str) -> str:
    """The one word `systemctl is-enabled` or `is-active` answers."""
    return sandbox.systemctl(verb, unit, check=False).strip().splitlines()[-1]


def missing_paths(sandbox: Sandbox, paths: tuple[str, ...]) -> list[str]:
    return [path for path in paths if sandbox.run("test", "-e", path, check=False).returncode]


def documented_pages(sandbox: Sandbox) -> list[str]:
    """Where the man pages the shipped units and catalog refer to (man:portguard...) live."""
    shown = sandbox.systemctl("show", "-p", "Documentation", "--value", *SHIPPED_UNITS)
    shown += sandbox.read_file("/usr/lib/systemd/catalog/portguard.catalog")
    pages = set(re.findall(r"man:(portguard[\w.-]*)\((\d)\)", shown))
    return sorted(f"/usr/share/man/man{section}/{name}.{section}.gz" for name, section in pages)


def check_installed(sandbox: Sandbox, deb: Path, clock: Stopwatch) -> None:
    with clock.lap("install"):
        done = install(sandbox, deb)
    assert done.returncode == 0, f"apt-get install {deb.name}:\n{done.stdout}\n{done.stderr}"
    # Offline, apt could only use what the root has: nothing but portguard is new.
    assert re.search(r"^0 upgraded, 1 newly installed", done.stdout, re.MULTILINE), done.stdout
    assert package_status(sandbox, "portguard") == "install ok installed"
    assert unit_state(sandbox, "is-enabled", "portguard-reserve.service") == "enabled"
    assert unit_state(sandbox, "is-enabled", "portguard-audit.timer") == "disabled"
    assert unit_state(sandbox, "is-active", "portguard-audit.timer") == "inactive"
    assert missing_paths(sandbox, INSTALLED + tuple(documented_pages(sandbox))) == []
    assert sandbox.system_state() == "running", sandbox.systemctl("--failed")


def guard_by_generator(sandbox: Sandbox) -> None:
    """Registered plain units, no drop-in of ours: the package's generator guards them."""
    write_registry(sandbox, REGISTRY)
    for unit, port in UNITS.items():
        sandbox.write_file(
            f"/etc/systemd/system/{unit}",
            f"[Unit]\nDescription=Package test {unit}\n\n"
            f"[Service]\nExecStart={listener('0.0.0.0', port)}\n",
        )
    sandbox.daemon_reload()
    for unit in UNITS:
        dropin = generated_dropin(sandbox, unit)
        assert dropin is not None, sandbox.systemctl("cat", unit)
        assert dropin.splitlines()[-1] == GUARD
        assert drop_in_paths(sandbox, unit) == f"/run/systemd/generator/{unit}.d/50-portguard.conf"
        pre = sandbox.unit_properties(unit, "ExecStartPre")["ExecStartPre"]
        assert "path=/usr/bin/portguard ; argv[]=/usr/bin/portguard check " in pre, pre


def check_held_start(sandbox: Sandbox) -> None:
    """A squatter on api.service's port: the start fails, the journal names the squatter."""
    argv = shlex.split(listener("0.0.0.0", UNITS["api.service"]))
    sandbox.run("systemd-run", f"--unit={SQUATTER}", "--description=Legacy API", "--", *argv)
    wait_listening(sandbox, UNITS["api.service"])
    squatter_pid = sandbox.unit_properties(SQUATTER, "MainPID")["MainPID"]

    started = sandbox.start("api.service")

    assert started.returncode != 0
    assert started.active_state == "failed", started.status
    assert guard_status(sandbox, "api.service") == 69
    entries = [e for e in sandbox.journal("api.service") if e.get("MESSAGE_ID") == HELD]
    assert len(entries) == 1, entries
    expected = {
        "_SYSTEMD_UNIT": "api.service",
        "SYSLOG_IDENTIFIER": "portguard",
        "PORTGUARD_VERDICT": "held",
        "PORTGUARD_UNIT": "api.service",
        "PORTGUARD_PORT": "8080",
        "PORTGUARD_PROTO": "tcp",
        "PORTGUARD_OWNER_KIND": "service",
        "PORTGUARD_OWNER_UNIT": SQUATTER,
        "PORTGUARD_OWNER_PID": squatter_pid,
    }
    assert {field: entries[0].get(field) for field in expected} == expected
    assert SQUATTER in str(entries[0]["MESSAGE"])

    lines = explained(sandbox, "api.service")
    text = "\n".join(lines)
    assert "Subject: api.service not started: port 8080/tcp is held by another owner" in lines
    assert f"stop it with 'systemctl stop {SQUATTER}'" in text
    assert "then: systemctl start api.service" in lines
    assert "PORTGUARD_" not in text


def check_free_start_and_why(sandbox: Sandbox) -> None:
    started = sandbox.start("web.service")
    assert started.active, started.status
    wait_listening(sandbox, UNITS["web.service"])
    assert guard_status(sandbox, "web.service") == 0

    held = sandbox.run("/usr/bin/portguard", "why", "8080", check=False)
    assert held.returncode == 1, held.stdout + held.stderr
    assert held.stdout.startswith(f"8080 is held by {SQUATTER} "), held.stdout
    free = sandbox.run("/usr/bin/portguard", "why", "8082", check=False)
    assert free.returncode == 0, free.stdout + free.stderr


def clean_up_and_purge(sandbox: Sandbox) -> None:
    """Undo what the test made, then `apt-get purge portguard`."""
    for unit in ("web.service", SQUATTER):
        assert not sandbox.stop(unit).returncode
    sandbox.run("systemctl", "reset-failed")
    test_files = [f"/etc/systemd/system/{unit}" for unit in UNITS]
    sandbox.run("rm", "--", *test_files, "/etc/portguard/registry.yaml")
    sandbox.daemon_reload()

    done = apt_get(sandbox, "purge", "portguard")
    assert done.returncode == 0, f"apt-get purge portguard:\n{done.stdout}\n{done.stderr}"
    sandbox.daemon_reload()
    listed = sandbox.run("dpkg", "-l", "portguard", check=False)
    # dpkg forgets a purged package, or lists it as not installed ("un"/"pn") at most.
    assert listed.returncode == 1 or re.search(r"^[up]n +portguard ", listed.stdout, re.M), (
        listed.stdout
    )
    assert package_status(sandbox, "portguard") in ("", "unknown ok not-installed")
    assert sandbox.system_state() == "running", sandbox.systemctl("--failed")


def test_the_package_depends_on_every_runtime_library(deb: Path) -> None:
    """pyproject.toml puts pyroute2 and pystemd in the `host` extra (lint off the host needs
    neither); the package must not lose them with it."""
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                             text=True, timeout=60, check=True).stdout  # fmt: skip
    names = {item.split()[0] for item in depends.replace("|", ",").split(",") if item.strip()}
    assert {"python3-pyroute2", "python3-pystemd", "python3-yaml", "systemd"} <= names, depends


def test_install_guard_explain_and_purge(suite: str, deb: Path, booted: Sandbox) -> None:
    clock = Stopwatch(suite)
    before = file_list(booted)

    check_installed(booted, deb, clock)
    # The list sees what the package installs, so an empty difference at the end means something.
    installed = file_list(booted)
    assert [path for path in INSTALLED if path.rstrip("/") not in installed] == []
    guard_by_generator(booted)
    check_held_start(booted)
    check_free_start_and_why(booted)
    with clock.lap("clean up and purge"):
        clean_up_and_purge(booted)

    left = differences(before, file_list(booted))
    assert left == [], "the root differs after purge:\n" + "\n".join(left)
    clock.split("whole test (after boot)")


def test_autopkgtest(suite: str, deb: Path, booted: Sandbox) -> None:
    control = PROJECT / autopkgtest.CONTROL
    if not control.is_file():
        unavailable(f"no {control}")
    tests = autopkgtest.parse_control(control.read_text(encoding="utf-8"))
    assert tests, f"{control} declares no tests"
    clock = Stopwatch(suite)
    with clock.lap("install"):
        done = install(booted, deb)
    assert done.returncode == 0, f"apt-get install {deb.name}:\n{done.stdout}\n{done.stderr}"

    outcomes = []
    for test in tests:
        outcome = autopkgtest.run(booted, test, PROJECT)
        print(f"{suite}: {autopkgtest.describe(outcome)}")
        outcomes.append(outcome)

    failed = [autopkgtest.describe(o) for o in outcomes if o.problem is not None]
    assert failed == [], "\n\n".join(failed)

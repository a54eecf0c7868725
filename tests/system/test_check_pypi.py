"""The guard on the current PyPI releases of its dependencies (pystemd, pyroute2, PyYAML).

`tools/setup` builds .venv-pypi without Debian's packages; here the units' ExecStartPre=
runs portguard on that interpreter, so sock_diag, D-Bus and YAML go through PyPI's code. The
venv lives outside the checkout (the checkout's .venv-pypi is a link to it), so a guard that
runs as nobody can run it wherever the checkout was cloned.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.system.guarded import (
    SRC,
    guard_start,
    listener,
    plain_unit,
    wait_listening,
)
from tests.system.sandbox import Sandbox

# Through the link, never via the checkout's path: nobody may not traverse the checkout.
PYPI_PYTHON = (Path(SRC).parent / ".venv-pypi").resolve() / "bin" / "python"
GUARD = f"{PYPI_PYTHON} -m portguard check"
REGISTRY = """
    version: 1
    units:
      myapp.service:
        listen: [8080/tcp]
    """


@pytest.fixture(scope="module", autouse=True)
def _pypi_venv() -> None:
    if not PYPI_PYTHON.exists():
        pytest.fail(f"{PYPI_PYTHON} is missing: run tools/setup (make test does)", pytrace=False)


def test_the_venv_really_has_pypis_releases() -> None:
    code = (
        "import json, sys; from importlib.metadata import version as v; "
        "import pyroute2, pystemd, yaml; "
        "print(json.dumps([v('pystemd'), v('pyroute2'), v('PyYAML'), pystemd.__file__]))"
    )
    out = subprocess.run([str(PYPI_PYTHON), "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout  # fmt: skip
    pystemd_version, pyroute2_version, _, location = json.loads(out)
    assert pystemd_version.startswith("0.15.")
    assert pyroute2_version.startswith("0.9.")
    assert "/usr/lib/python3/dist-packages" not in location
    # Outside the checkout, so a guard that runs as nobody can run it (issue 23).
    assert not PYPI_PYTHON.is_relative_to(Path(SRC).parent.resolve()), PYPI_PYTHON


def squatter(sandbox: Sandbox) -> int:
    plain_unit(sandbox, "squatter.service", f"[Service]\nExecStart={listener('0.0.0.0', 8080)}\n")
    sandbox.daemon_reload()
    assert sandbox.start("squatter.service").active
    wait_listening(sandbox, 8080)
    return int(sandbox.unit_properties("squatter.service", "MainPID")["MainPID"])


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_held_by_a_service(sandbox: Sandbox, user: str) -> None:
    """Root asks systemd's private bus, nobody the system bus: both through pystemd 0.15."""
    holder = squatter(sandbox)
    started = guard_start(sandbox, REGISTRY, guard=GUARD, extra=f"User={user}\n")
    assert started.result.active_state == "failed"
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "held"
    assert entry["PORTGUARD_OWNER_KIND"] == "service"
    assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert entry["PORTGUARD_OWNER_PID"] == str(holder)
    assert "PORTGUARD_UNKNOWN" not in entry


def test_socket_unit_and_the_service_it_starts(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "legacy.socket", "[Socket]\nListenStream=8080\n")
    plain_unit(sandbox, "legacy.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    sandbox.daemon_reload()
    assert sandbox.start("legacy.socket").active
    entry = guard_start(sandbox, REGISTRY, guard=GUARD).entry
    assert entry["PORTGUARD_OWNER_KIND"] == "socket"
    assert entry["PORTGUARD_OWNER_UNIT"] == "legacy.socket"
    assert "legacy.service" in str(entry["MESSAGE"])


def test_free_port_starts(sandbox: Sandbox) -> None:
    started = guard_start(sandbox, REGISTRY, guard=GUARD, exec_start=listener("0.0.0.0", 8080))
    assert started.result.active, started.result.status
    assert started.entries == []


def test_lint_on_pypis_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "registry.yaml"
    bad.write_text("version: 1\nunits:\n  a.service:\n    listen: [80/sctp]\n")
    result = subprocess.run(
        [str(PYPI_PYTHON), "-m", "portguard", "lint", str(bad)],
        capture_output=True, text=True, timeout=30, env={"PYTHONPATH": SRC}, check=False,
    )  # fmt: skip
    assert result.returncode == 78
    assert f"{bad}:4:17: error: '80/sctp': unknown protocol" in result.stdout

"""The files shipped for users are valid as shipped."""

import os
import subprocess
import sys

from portguard.cli import main
from tests.conftest import EXAMPLE_REGISTRY, SRC, shipped


def test_example_registry_passes_lint() -> None:
    assert main(["lint", str(EXAMPLE_REGISTRY)]) == 0


def test_bin_portguard_runs_the_cli() -> None:
    """bin/portguard, what drop-ins call as /usr/bin/portguard, reaches the full CLI."""
    script = shipped("bin/portguard", "/usr/bin/portguard")
    assert os.access(script, os.X_OK)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # Its shebang has -I (PYTHONPATH ignored, as installed); run it the way the test can.
    found = subprocess.run(
        [sys.executable, "-c", f"import runpy; runpy.run_path({str(script)!r})", "--version"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("portguard ")


def test_bin_portguard_runs_without_site_on_debians_own_packages() -> None:
    """/usr/bin/portguard starts with -I -S (no `site`: a quarter of a bare start) and finds
    its dependencies in Debian's dist-packages, which it puts on the path itself: lint needs
    PyYAML from there (python3-yaml, installed by tools/setup)."""
    script = shipped("bin/portguard", "/usr/bin/portguard")
    assert script.read_text().splitlines()[0] == "#!/usr/bin/python3 -IS"
    run = f"import sys; sys.path.insert(0, {str(SRC)!r}); exec(open({str(script)!r}).read())"
    found = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", run, "lint", str(EXAMPLE_REGISTRY)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert "valid:" in found.stderr

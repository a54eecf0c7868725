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

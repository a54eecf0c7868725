"""Fixtures for tests against a real systemd; every test here is marked `system`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.sandbox import Sandbox, boot, cgroup2_root

HERE = Path(__file__).parent
SYSTEMD = Path("/lib/systemd/systemd")
# IPVS live needs a kernel with IPVS loaded; without one it is not a test here (not a skip):
# tests/host/test_ipvs.py proves the same on a table in the kernel's own format.
collect_ignore = [] if Path("/proc/net/ip_vs").exists() else ["test_ipvs_live.py"]


def missing_requirement() -> str | None:
    """Why system tests cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "system tests need root"
    for tool in ("unshare", "nsenter", "setpriv"):
        if shutil.which(tool) is None:
            return f"system tests need {tool} (util-linux)"
    if cgroup2_root() is None:
        return "system tests need a cgroup2 mount"
    if not os.access(SYSTEMD, os.X_OK):
        return f"system tests need {SYSTEMD}"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.system)


@pytest.fixture(autouse=True)
def _system_requirements() -> None:
    reason = missing_requirement()
    if reason is None:
        return
    # A CI run must never turn green on system tests that did not run.
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with boot() as booted:
        yield booted

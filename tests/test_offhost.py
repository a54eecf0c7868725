"""`portguard lint` off the host: in a config repository's CI, with pre-commit.

A clean venv (no Debian packages) installs portguard from this checkout as pip would from
PyPI, with a compiler that always fails (CC=false): lint must need no C build, so PyPI's
pystemd (an sdist) must not come with it. It then lints as nobody, with no systemd asked.
pre-commit runs .pre-commit-hooks.yaml's hook in a throwaway config repository.
Both fetch PyYAML and setuptools from PyPI, as a config repository's CI would.
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import CHECKOUT, NOBODY
from tests.unprivileged import run_as

GOOD = "version: 1\nunits:\n  a.service:\n    listen: [8080/tcp]\n"
DROPIN_GOOD = "version: 1\nunits:\n  b.service:\n    listen: [8081/tcp]\n"
DROPIN_OVERLAP = "version: 1\nunits:\n  b.service:\n    listen: [127.0.0.1:8080/tcp]\n"
NO_COMPILER = {"CC": "false", "CXX": "false"}


def needs_root() -> None:
    if os.geteuid() != 0:
        reason = "runs lint as nobody, which needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own temporary directory is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="portguard-offhost-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def project_copy(into: Path) -> Path:
    """What pip and pre-commit install from: the project's files, without build output."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy2(CHECKOUT / name, into / name)
    shutil.copytree(CHECKOUT / "src", into / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    return into


def test_lint_in_a_clean_venv_needs_no_c_build_no_root_and_no_host(open_dir: Path) -> None:
    needs_root()
    venv = open_dir / "venv"
    assert run("/usr/bin/python3", "-m", "venv", venv).returncode == 0
    source = project_copy(open_dir / "portguard")
    done = run(venv / "bin" / "pip", "install", "--disable-pip-version-check", source,
               env=NO_COMPILER)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for module in ("pystemd", "pyroute2"):
        found = run(venv / "bin" / "python", "-c", f"import {module}")
        assert found.returncode != 0, f"{module} came with a plain install"
    registry = open_dir / "registry"
    (registry / "registry.d").mkdir(parents=True)
    (registry / "registry.yaml").write_text(GOOD)
    (registry / "registry.d" / "10-b.yaml").write_text(DROPIN_OVERLAP)
    for path in (registry, *registry.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)

    env = {"HOME": "/nonexistent", "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent"}
    lint = [str(venv / "bin" / "portguard"), "lint", str(registry)]
    done = run_as(NOBODY, lint, env=env)
    assert done.returncode == 78, done.stdout + done.stderr
    assert "b.service claims 127.0.0.1:8080/tcp, which overlaps 8080/tcp" in done.stdout
    (registry / "registry.d" / "10-b.yaml").write_text(DROPIN_GOOD)
    done = run_as(NOBODY, lint, env=env)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    assert done.stderr == "valid: 2 units in 2 files, 0 errors, 0 warnings\n"

    # What needs the host's libraries says which, in one line: no traceback, no "a bug".
    for verb in (["why", "22"], ["init"]):
        done = run(venv / "bin" / "portguard", *verb)
        assert done.returncode == 69, done.stderr
        assert done.stderr == (
            "portguard: the kernel's socket table could not be read: pyroute2 is not "
            "installed (Debian's python3-pyroute2, or pip install 'portguard[host]')\n"
        )


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=portguard test", "-c", "user.email=test@portguard.invalid"]
    done = run("git", *identity, "-C", repo, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_pre_commit_hook_lints_the_whole_registry_of_a_changed_file(tmp_path: Path) -> None:
    hooks = project_copy(tmp_path / "hooks")
    git(hooks, "init", "-q")
    git(hooks, "add", ".")
    git(hooks, "commit", "-q", "-m", "portguard")
    config = tmp_path / "config"
    registry = config / "roles" / "web" / "files" / "portguard"
    (registry / "registry.d").mkdir(parents=True)
    (registry / "registry.yaml").write_text(GOOD)
    (registry / "registry.d" / "10-b.yaml").write_text(DROPIN_GOOD)
    (config / "README.md").write_text("The web role.\n")
    hook = {"repo": str(hooks), "rev": git(hooks, "rev-parse", "HEAD"),
            "hooks": [{"id": "portguard-lint"}]}  # fmt: skip
    (config / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [hook]}))
    git(config, "init", "-q")
    git(config, "add", ".")
    found = CHECKOUT / ".venv" / "bin" / "pre-commit"
    program = str(found) if found.exists() else shutil.which("pre-commit")
    if program is None:
        reason = "needs pre-commit (tools/setup installs it from requirements-dev.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    pre_commit = [program, "run", "--color=never"]
    env = {**NO_COMPILER, "PRE_COMMIT_HOME": str(tmp_path / "cache")}

    good = run(*pre_commit, "--all-files", cwd=config, env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "portguard lint" in good.stdout and "Passed" in good.stdout

    # Only the drop-in changes; its overlap is with registry.yaml, which did not.
    (registry / "registry.d" / "10-b.yaml").write_text(DROPIN_OVERLAP)
    changed = "roles/web/files/portguard/registry.d/10-b.yaml"
    bad = run(*pre_commit, "--files", changed, cwd=config, env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed" in bad.stdout
    assert (
        f"{changed}:4:14: error: b.service claims 127.0.0.1:8080/tcp, which overlaps 8080/tcp "
        "claimed by a.service at roles/web/files/portguard/registry.yaml:4:14"
    ) in bad.stdout

    # A file that is not a registry's does not run the hook.
    skipped = run(*pre_commit, "--files", "README.md", cwd=config, env=env)
    assert skipped.returncode == 0, skipped.stdout
    assert "(no files to check)" in skipped.stdout

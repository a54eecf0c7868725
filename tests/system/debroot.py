"""Fresh Debian roots and the built package, for the package test (test_package.py).

tools/roots caches one debootstrapped root per suite as a tarball; `extracted` unpacks one for
`boot(lowerdir=...)`, which only ever reads it. `install` and `purge` drive apt inside a booted
root, and `file_list` is what "the package leaves nothing behind" is checked against.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from tests.system.sandbox import PROJECT, Sandbox

SUITES = ("bookworm", "trixie")
ROOTS = Path(os.environ.get("PORTGUARD_ROOTS", "/var/cache/portguard-test/roots"))
DEB_DIR = PROJECT / "build" / "deb"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
PYTHON = "/usr/bin/python3"


def unavailable(reason: str) -> NoReturn:
    """Skip for REASON, but fail under CI: a CI run must never turn green on tests not run."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def root_tarball(suite: str) -> Path:
    tarball = ROOTS / f"{suite}.tar.zst"
    if not tarball.is_file():
        unavailable(f"no {suite} root at {tarball}: run tools/roots {suite}")
    return tarball


# What the .deb is built from. The autopkgtest runs the checkout's tests against the package,
# so a package older than these fails for no fault of the code.
PACKAGED = ("src", "bin", "systemd", "packaging", "debian", "pyproject.toml")


def newest_source() -> Path:
    newest = PROJECT / "pyproject.toml"
    for top in PACKAGED:
        for directory, subdirectories, files in os.walk(PROJECT / top):
            subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
            for name in files:
                path = Path(directory, name)
                if path.stat().st_mtime > newest.stat().st_mtime:
                    newest = path
    return newest


def built_package() -> Path:
    """The newest build/deb/portguard_*_all.deb, provided it is newer than what it is built from."""
    debs = sorted(DEB_DIR.glob("portguard_*_all.deb"), key=lambda deb: deb.stat().st_mtime)
    if not debs:
        unavailable(f"no portguard_*_all.deb in {DEB_DIR}: run make deb")
    newest = newest_source()
    if newest.stat().st_mtime > debs[-1].stat().st_mtime:
        unavailable(f"{debs[-1]} is older than {newest.relative_to(PROJECT)}: run make deb")
    return debs[-1]


@contextmanager
def extracted(tarball: Path) -> Iterator[Path]:
    """TARBALL unpacked into a fresh directory in memory, removed afterwards.

    /dev/shm rather than /var/tmp: ~11,000 files take 0.5 s to create there and ~10 s on this
    VM's ext4; the ~250 MB are held only while one suite's tests run.
    """
    name = tarball.name.split(".", 1)[0]
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else "/var/tmp"
    directory = Path(tempfile.mkdtemp(dir=scratch, prefix=f"portguard-root-{name}-"))
    try:
        subprocess.run(
            ["tar", "--extract", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*",
             f"--file={tarball}", f"--directory={directory}"],
            check=True, timeout=300,
        )  # fmt: skip
        yield directory
    finally:
        shutil.rmtree(directory)


class Stopwatch:
    """Named durations of one test, printed as they are taken (pytest -rP shows them)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.laps: dict[str, float] = {}

    @contextmanager
    def lap(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.laps[name] = time.monotonic() - started
            print(f"{self.label}: {name} {self.laps[name]:.2f} s")

    def split(self, name: str) -> None:
        """Record the time since the stopwatch started as NAME."""
        self.laps[name] = time.monotonic() - self.started
        print(f"{self.label}: {name} {self.laps[name]:.2f} s")


def apt_get(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    """`apt-get -y ARGS` inside: offline, as the root's package lists are empty."""
    return sandbox.run("apt-get", "-y", *args, env=APT_ENV, check=False, timeout=300)


def install(sandbox: Sandbox, deb: Path) -> subprocess.CompletedProcess[str]:
    """`apt-get install ./DEB` inside, the .deb copied into the sandbox's /tmp first."""
    shutil.copyfile(deb, sandbox.root / "tmp" / deb.name)
    return apt_get(sandbox, "install", f"/tmp/{deb.name}")


def package_status(sandbox: Sandbox, package: str) -> str:
    """dpkg's status of PACKAGE ("install ok installed", ...), "" when dpkg does not know it."""
    shown = sandbox.run("dpkg-query", "-W", "-f=${Status}", package, check=False)
    return shown.stdout.strip() if shown.returncode == 0 else ""


# What file_list leaves out: kernel and device file systems, scratch space, the journal, apt's
# caches and package lists (an install from a local .deb changes them), the checkout, and
# the directory trixie's apt-extracttemplates (run by apt for every package) leaves behind.
# /run is left out but for what the generator, systemd's unit path and portguard write there.
UNLISTED = ("/proc", "/sys", "/dev", "/tmp", "/run", "/var/log", "/var/cache/apt", "/var/lib/apt",
            str(PROJECT), "/var/cache/debconf/tmp.ci")  # fmt: skip
LISTED_RUN = ("/run/systemd/generator", "/run/systemd/generator.early",
              "/run/systemd/generator.late", "/run/systemd/system", "/run/portguard")  # fmt: skip
# Configuration is compared by content as well; elsewhere type, mode and owner are.
HASHED = ("/etc/",)

# Run inside by the root's own python3: one walk, no crossing into other file systems.
_LIST_FILES = r"""
import hashlib, json, os, stat, sys
spec = json.loads(sys.argv[1])
skip, hashed, found = set(spec["skip"]), tuple(spec["hashed"]), {}

def describe(path, st):
    text = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
    if stat.S_ISLNK(st.st_mode):
        return f"{text} -> {os.readlink(path)}"
    if stat.S_ISREG(st.st_mode) and path.startswith(hashed):
        with open(path, "rb") as file:
            return f"{text} sha256 {hashlib.sha256(file.read()).hexdigest()}"
    return text

for top in spec["tops"]:
    if not os.path.lexists(top):
        continue
    st = os.lstat(top)
    found[top] = describe(top, st)
    device, pending = st.st_dev, [top] if stat.S_ISDIR(st.st_mode) else []
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                if entry.path in skip or (is_dir and st.st_dev != device):
                    continue
                found[entry.path] = describe(entry.path, st)
                if is_dir:
                    pending.append(entry.path)
json.dump(found, sys.stdout)
"""


def file_list(sandbox: Sandbox) -> dict[str, str]:
    """Every path of the booted root but UNLISTED ones, with type, mode, owner (and content)."""
    spec = {"tops": ["/", *LISTED_RUN], "skip": UNLISTED, "hashed": HASHED}
    listed = sandbox.run(PYTHON, "-I", "-c", _LIST_FILES, json.dumps(spec), timeout=120)
    found: dict[str, str] = json.loads(listed.stdout)
    return found


def differences(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What changed between two file lists, one line per path, sorted by path."""
    lines = [f"+ {path}  {after[path]}" for path in after.keys() - before.keys()]
    lines += [f"- {path}  {before[path]}" for path in before.keys() - after.keys()]
    lines += [
        f"~ {path}  {before[path]}  =>  {after[path]}"
        for path in before.keys() & after.keys()
        if before[path] != after[path]
    ]
    return sorted(lines, key=lambda line: line[2:])

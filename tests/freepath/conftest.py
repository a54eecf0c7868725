"""The free path's test tree: a registry root and a compiled-form directory in tmp_path,
trusted as root's, and free ports to claim."""

import os
import socket
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from portguard.commands.trusted import load_registry
from portguard.freepath import cache
from portguard.freepath.check import run
from tests.conftest import NOBODY, stand_for_root

IS_ROOT = os.geteuid() == 0


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing binds now, on IPv4 and IPv6 (the kernel's pick, released again)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6, kind) as probe:
            probe.bind(("::", 0))  # dual-stack: free on both families
            port = int(probe.getsockname()[1])
        if port < 60000:  # leaves room for port + 1
            return port
    raise AssertionError("no free port")


def listen_on(port: int, host: str = "0.0.0.0") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    return sock


@dataclass
class Tree:
    """A registry root and a cache directory in tmp_path, trusted as root's."""

    root: Path
    foreign: set[int]  # inodes that count as another user's (chown'd when we are root)

    @property
    def main(self) -> Path:
        return self.root / "registry.yaml"

    def write(self, text: str, name: str = "registry.yaml") -> Path:
        path = self.root / name
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        os.chmod(path, 0o644)
        return path

    def compile(self) -> None:
        """What the first full `check` after a change does: validate, then store the cache."""
        load_registry(self.root)

    def run(self, *args: str) -> int | None:
        return run(["check", "--registry", str(self.root), *args])

    def give_away(self, path: Path) -> None:
        if IS_ROOT:
            os.chown(path, NOBODY, NOBODY)
        else:
            self.foreign.add(path.stat().st_ino)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tree]:
    root = tmp_path / "etc"
    root.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    os.chmod(root, 0o755)
    compiled = tmp_path / "run"
    monkeypatch.setattr(cache, "CACHE_DIR", str(compiled))
    # These tests are about binds and the compiled form; whether a NAT rule takes the port
    # is freepath/nat.py's, tested in test_nat.py: here no rule ever does (a stand-in).
    monkeypatch.setattr("portguard.freepath.check.untouched", lambda *args: True)
    made = Tree(root, stand_for_root(monkeypatch))
    if not IS_ROOT:
        monkeypatch.setattr(os, "geteuid", lambda: 0)
    yield made


@pytest.fixture
def ports() -> tuple[int, int]:
    first = free_port()
    return first, first + 1


def simple(tree: Tree, ports: tuple[int, int]) -> None:
    tree.write(f"""
        version: 1
        units:
          myapp.service:
            listen: [{ports[0]}/tcp, "127.0.0.1:{ports[1]}/tcp"]
          redis@.service:
            listen: ["%i/tcp"]
    """)

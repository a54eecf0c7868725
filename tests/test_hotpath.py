"""The free path of `check` (hotpath.py): 0 only when the compiled cache matches the registry's
files and every bind is free now; None, so the full `check` decides, in every other case."""

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portguard import hotpath
from portguard.commands.trusted import compile_units, load_registry
from tests.conftest import NOBODY, stand_for_root

SRC = Path(hotpath.__file__).resolve().parent.parent
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
        return hotpath.run(["check", "--registry", str(self.root), *args])

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
    cache = tmp_path / "run"
    monkeypatch.setattr(hotpath, "CACHE_DIR", str(cache))
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


# --- is_safe: a pure rule on stat results ------------------------------------------------------


def stat(uid: int, gid: int, mode: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("uid", "gid", "mode", "safe"),
    [
        (0, 0, 0o644, True),
        (0, 0, 0o664, True),  # group root may write
        (0, 0, 0o600, True),
        (0, 100, 0o644, True),
        (0, 100, 0o664, False),  # a non-root group may write
        (0, 0, 0o646, False),  # anyone may write
        (0, 0, 0o777, False),
        (1000, 0, 0o644, False),  # not root's
        (NOBODY, NOBODY, 0o600, False),
    ],
)
def test_is_safe(uid: int, gid: int, mode: int, safe: bool) -> None:
    assert hotpath.is_safe(stat(uid, gid, mode)) is safe


# --- run() -------------------------------------------------------------------------------------


def test_free_after_the_cache_is_compiled(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    assert tree.run("myapp.service") is None  # no cache yet: the full check decides
    tree.compile()
    assert tree.run("myapp.service") == 0
    assert Path(hotpath.cache_path(str(tree.root))).parent == Path(hotpath.CACHE_DIR)


def test_busy_port_goes_to_the_full_check(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    with listen_on(ports[0]):
        assert tree.run("myapp.service") is None
    with listen_on(ports[1], "127.0.0.1"):
        assert tree.run("myapp.service") is None
    with listen_on(ports[0], "::1"):  # the [::] bind of the wildcard claim sees it
        assert tree.run("myapp.service") is None
    assert tree.run("myapp.service") == 0


def test_changed_registry_is_a_cache_miss(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    text = tree.main.read_text()
    tree.main.write_text(text + "# a comment changes the hash, not the meaning\n")
    assert tree.run("myapp.service") is None
    tree.compile()
    assert tree.run("myapp.service") == 0


def test_new_dropin_is_a_cache_miss(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    tree.write("units:\n  other.service:\n    listen: [1/udp]\n", "registry.d/10-other.yaml")
    assert tree.run("myapp.service") is None


def test_cache_of_other_contents_is_not_believed(tree: Tree, ports: tuple[int, int]) -> None:
    """A cache stored under another key (another registry's) never answers."""
    simple(tree, ports)
    found = hotpath.digest(str(tree.root))
    assert found is not None
    units: dict[str, tuple[hotpath.BindSpec, ...]] = {"myapp.service": ()}
    assert hotpath.store_cache(str(tree.root), b"\0" * 32, units)
    assert tree.run("myapp.service") is None
    assert hotpath.store_cache(str(tree.root), found[0], units)
    assert tree.run("myapp.service") == 0  # the same cache under the right key


def test_corrupt_cache_is_a_miss(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    Path(hotpath.cache_path(str(tree.root))).write_bytes(b"\xff not marshal")
    assert tree.run("myapp.service") is None


@pytest.mark.parametrize("mode", [0o666, 0o646])
def test_world_writable_registry_is_not_trusted(
    tree: Tree, ports: tuple[int, int], mode: int
) -> None:
    simple(tree, ports)
    tree.compile()
    os.chmod(tree.main, mode)
    assert tree.run("myapp.service") is None


def test_world_writable_registry_directory_is_not_trusted(
    tree: Tree, ports: tuple[int, int]
) -> None:
    simple(tree, ports)
    tree.compile()
    os.chmod(tree.root, 0o777)
    assert tree.run("myapp.service") is None


def test_registry_of_another_user_is_not_trusted(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    tree.give_away(tree.main)
    assert tree.run("myapp.service") is None


def test_cache_of_another_user_is_not_trusted(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    tree.give_away(Path(hotpath.cache_path(str(tree.root))))
    assert tree.run("myapp.service") is None


def test_unknown_unit_goes_to_the_full_check(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    assert tree.run("other.service") is None
    assert tree.run("redis@.service") is None  # the template itself is no unit
    assert tree.run("redis@cache.service") is None  # an instance that is no port


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--json", "myapp.service"],
        ["check", "myapp.service", "--json"],
        ["check", "myapp.service", "--debug"],
        ["check", "myapp.service", "other.service"],
        ["check", "--registry"],
        ["check", "--registry", "ROOT", "--registry", "ROOT", "myapp.service"],
        ["check", "myapp.service", "--registry", "ROOT"],
        ["lint", "--registry", "ROOT", "myapp.service"],
        ["check"],  # no unit named, and this process runs in no registered unit
        [],
    ],
)
def test_other_command_lines_go_to_the_full_cli(
    tree: Tree, ports: tuple[int, int], argv: list[str]
) -> None:
    simple(tree, ports)
    tree.compile()
    assert hotpath.run(["check", "--registry", str(tree.root), "myapp.service"]) == 0
    assert hotpath.run([str(tree.root) if a == "ROOT" else a for a in argv]) is None


def test_template_instance_uses_the_instance_as_port(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    unit = f"redis@{ports[0]}.service"
    assert tree.run(unit) == 0
    with listen_on(ports[0]):
        assert tree.run(unit) is None
    with listen_on(ports[1]):  # another instance's port does not matter
        assert tree.run(unit) == 0


def test_lookup_of_redis_6379() -> None:
    spec: hotpath.BindSpec = (socket.AF_INET, socket.SOCK_STREAM, "0.0.0.0", None, True, False,
                              False)  # fmt: skip
    units: dict[str, tuple[hotpath.BindSpec, ...]] = {"redis@.service": (spec,)}
    assert hotpath._lookup(units, "redis@6379.service") == ((spec,), 6379)
    assert hotpath._lookup(units, "redis@main.service") is None
    assert hotpath._lookup(units, "other@6379.service") is None


def test_compiled_binds_match_the_claims(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    registry = load_registry(tree.root)
    units = compile_units(registry)
    assert units["myapp.service"] == (
        (socket.AF_INET, socket.SOCK_STREAM, "0.0.0.0", ports[0], True, False, False, False),
        (socket.AF_INET6, socket.SOCK_STREAM, "::", ports[0], True, False, True, False),
        (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", ports[1], True, False, False, False),
    )
    assert units["redis@.service"][0][3] is None


def test_udp_bind_without_reuseaddr_sees_a_bound_udp_socket(tree: Tree) -> None:
    port = free_port(socket.SOCK_DGRAM)
    tree.write(f"version: 1\nunits:\n  dns.service:\n    listen: [127.0.0.1:{port}/udp]\n")
    tree.compile()
    assert tree.run("dns.service") == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", port))
        assert tree.run("dns.service") is None


# --- nothing heavy on the free path ------------------------------------------------------------

PURITY = """
import posix, sys
before = set(sys.modules)
sys.path.insert(0, {src!r})
sys.argv = ["portguard", "check", "--registry", {root!r}, "myapp.service"]
import portguard.hotpath as hotpath
hotpath.CACHE_DIR = {cache!r}
if posix.geteuid() != 0:
    hotpath.is_safe = lambda st: True  # the files are ours; the imports are under test
from portguard.__main__ import main
code = main()
print(code)
print(" ".join(sorted(set(sys.modules) - before)))
print(" ".join(sorted(sys.modules)))
"""


def test_free_path_imports_only_builtin_modules(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    code = PURITY.format(src=str(SRC), root=str(tree.root), cache=hotpath.CACHE_DIR)
    # -S, as /usr/bin/portguard runs: without `site`, nothing has imported `os` before us.
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    exit_code, new, everything = result.stdout.splitlines()
    assert exit_code == "0"  # the free path answered; main() did not fall through
    allowed = {"portguard", "portguard.__main__", "portguard.hotpath", *sys.builtin_module_names}
    assert set(new.split()) - allowed == set()
    assert "os" not in everything.split()
    loaded = set(everything.split())
    for heavy in ("json", "dataclasses", "argparse", "yaml", "pyroute2", "pystemd", "enum",
                  "portguard.cli", "portguard.commands.check",
                  "portguard.registry.model"):  # fmt: skip
        assert heavy not in loaded


# --- trust walks the whole resolved path ------------------------------------------------------

# A small tree of directories, files and symbolic links (relative, absolute, dangling, through
# `..`, in loops), then every name in it resolved both ways.
LINK_TARGETS = ["d", "d/f", "../d", "./d/e", "/", "x/../d", "missing", "d/f/g", "l0", "l1",
                "l2", "e/..", "d//e/", "..", "."]  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(links=st.lists(st.sampled_from(LINK_TARGETS), min_size=1, max_size=3),
       lookups=st.lists(st.sampled_from(["l0", "l1", "l2", "d", "d/e", "l0/e", "l1/../d",
                                          "l2/f", "d/../l0", "l0/f/x", "nope/x"]),
                        min_size=1, max_size=4))  # fmt: skip
# A file's `..`: the kernel says ENOTDIR (Debian 13's autopkgtest found the difference).
@example(links=["d", "d/f"], lookups=["l1/../d", "l1/x"])
def test_realpath_resolves_as_the_kernel_does(
    tmp_path_factory: pytest.TempPathFactory, links: list[str], lookups: list[str]
) -> None:
    top = tmp_path_factory.mktemp("links")
    (top / "d" / "e").mkdir(parents=True)
    (top / "d" / "f").write_text("")
    for i, target in enumerate(links):
        (top / f"l{i}").symlink_to(target if not target.startswith("/") else str(top) + target)
    for name in lookups:
        path = f"{top}/{name}"
        # The kernel is the oracle for whether the path resolves (Python's realpath answered
        # ENOENT where stat(2) says ENOTDIR before 3.13); realpath for where it leads.
        try:
            os.stat(path)
            expected: str | type[BaseException] = os.path.realpath(path, strict=True)
        except OSError as exc:
            expected = FileNotFoundError if isinstance(exc, FileNotFoundError) else OSError
        try:
            got: str | type[BaseException] = hotpath.realpath(path)
        except OSError as exc:
            got = FileNotFoundError if isinstance(exc, FileNotFoundError) else OSError
        assert got == expected, (name, links)


needs_root = pytest.mark.skipif(not IS_ROOT, reason="another user's directory needs chown")


def owned_by(path: Path, uid: int, mode: int) -> Path:
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


@needs_root
def test_a_registry_linked_into_a_users_directory_is_not_trusted(tmp_path: Path) -> None:
    """/etc/portguard/registry.yaml -> /tmp/evil/r.yaml: the file is root's, but the user who
    owns its directory can swap it and move a guarded unit's claim."""
    (tmp_path / "evil").mkdir()
    evil = owned_by(tmp_path / "evil", NOBODY, 0o755)
    target = evil / "r.yaml"
    target.write_text("version: 1\nunits: {}\n")
    target.chmod(0o644)
    root = tmp_path / "portguard"
    root.mkdir(mode=0o755)
    (root / "registry.yaml").symlink_to(target)

    assert hotpath.first_unsafe([str(root / "registry.yaml")]) == str(evil)
    assert hotpath.digest(str(root)) is None  # so the free path does not answer


@needs_root
def test_a_directory_a_user_owns_above_the_registry_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    above = owned_by(tmp_path / "srv", NOBODY, 0o755)
    root = above / "portguard"
    root.mkdir(mode=0o755)
    (root / "registry.yaml").write_text("version: 1\n")
    assert hotpath.first_unsafe([str(root), str(root / "registry.yaml")]) == str(above)


@needs_root
def test_a_sticky_root_directory_on_the_way_is_trusted_with_roots_entries(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    shared = owned_by(tmp_path / "tmp", 0, 0o1777)
    root = shared / "portguard"
    root.mkdir(mode=0o755)
    (root / "registry.yaml").write_text("version: 1\n")
    assert hotpath.first_unsafe([str(root / "registry.yaml")]) is None
    # Without the sticky bit anyone could rename root's entry away and put theirs in its place.
    shared.chmod(0o777)
    assert hotpath.first_unsafe([str(root / "registry.yaml")]) == str(shared)


def test_a_full_run_leaves_no_temporary_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpath, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])  # ENOSPC half way, as a full tmpfs does

    monkeypatch.setattr(os, "write", full)
    assert hotpath.store_cache(str(tmp_path / "registry"), b"key", {"a.service": ()}) is False
    assert list(tmp_path.iterdir()) == []

"""The free path of `check` (freepath/check.py): 0 only when the compiled form matches the
registry's files and every bind is free now; None, so the full `check` decides, in every other
case."""

import marshal
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from portguard.commands.trusted import compile_units, load_registry
from portguard.freepath import cache, check, trust
from portguard.freepath.binds import BindSpec
from tests.conftest import SRC
from tests.freepath.conftest import Tree, free_port, listen_on, simple

# --- run() -------------------------------------------------------------------------------------


def test_free_after_the_cache_is_compiled(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    assert tree.run("myapp.service") is None  # no cache yet: the full check decides
    tree.compile()
    assert tree.run("myapp.service") == 0
    assert Path(cache.cache_path(str(tree.root))).parent == Path(cache.CACHE_DIR)


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
    found = trust.digest(str(tree.root))
    assert found is not None
    units: dict[str, tuple[BindSpec, ...]] = {"myapp.service": ()}
    assert cache.store_cache(str(tree.root), b"\0" * 32, units)
    assert tree.run("myapp.service") is None
    assert cache.store_cache(str(tree.root), found[0], units)
    assert tree.run("myapp.service") == 0  # the same cache under the right key


def test_corrupt_cache_is_a_miss(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    Path(cache.cache_path(str(tree.root))).write_bytes(b"\xff not marshal")
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
    tree.give_away(Path(cache.cache_path(str(tree.root))))
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
    assert check.run(["check", "--registry", str(tree.root), "myapp.service"]) == 0
    assert check.run([str(tree.root) if a == "ROOT" else a for a in argv]) is None


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
    spec: BindSpec = (int(socket.AF_INET), int(socket.SOCK_STREAM), "0.0.0.0", None, True, False,
                              False)  # fmt: skip
    units = {"redis@.service": marshal.dumps((spec,))}  # as cache.load_cache gives them
    assert check.lookup(units, "redis@6379.service") == ((spec,), 6379)
    assert check.lookup(units, "redis@main.service") is None
    assert check.lookup(units, "other@6379.service") is None


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
import portguard.freepath.cache as cache, portguard.freepath.trust as trust
cache.CACHE_DIR = {cache!r}
import portguard.freepath.check as check
check.untouched = lambda *args: True  # no NAT rule takes the port: test_nat.py's question
if posix.geteuid() != 0:
    trust.is_safe = lambda st: True  # the files are ours; the imports are under test
from portguard.__main__ import main
code = main()
print(code)
print(" ".join(sorted(set(sys.modules) - before)))
print(" ".join(sorted(sys.modules)))
"""


FREE_PATH = {f"portguard.freepath{m}" for m in ("", ".binds", ".cache", ".check", ".nat", ".trust")}


def test_free_path_imports_only_builtin_modules(tree: Tree, ports: tuple[int, int]) -> None:
    simple(tree, ports)
    tree.compile()
    code = PURITY.format(src=str(SRC), root=str(tree.root), cache=cache.CACHE_DIR)
    # -S, as /usr/bin/portguard runs: without `site`, nothing has imported `os` before us.
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    exit_code, new, everything = result.stdout.splitlines()
    assert exit_code == "0"  # the free path answered; main() did not fall through
    allowed = {"portguard", "portguard.__main__", *FREE_PATH, *sys.builtin_module_names}
    assert set(new.split()) - allowed == set()
    assert "os" not in everything.split()
    loaded = set(everything.split())
    for heavy in ("json", "dataclasses", "argparse", "yaml", "pyroute2", "pystemd", "enum",
                  "portguard.cli", "portguard.commands.check",
                  "portguard.registry.model"):  # fmt: skip
        assert heavy not in loaded


# --- pools (DESIGN rule 6) --------------------------------------------------------------------


def pool_tree(tree: Tree, first: int, last: int, min_free: int, proto: str = "tcp") -> None:
    tree.write(f"""
        version: 1
        units:
          relay.service:
            listen:
              - {{port: {first}-{last}/{proto}, pool: true, min-free: {min_free}}}
    """)
    tree.compile()


def free_run(length: int) -> int:
    """The first of LENGTH consecutive ports nothing binds now."""
    for _ in range(100):
        first = free_port()
        if first + length < 65536 and all(_free(p) for p in range(first, first + length)):
            return first
    raise AssertionError("no free run of ports")


def _free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::", port))
    except OSError:
        return False
    return True


def test_a_pool_with_taken_ports_is_free_while_min_free_of_it_can_be_bound(tree: Tree) -> None:
    first = free_run(4)
    pool_tree(tree, first, first + 3, 2)
    held = [listen_on(first, "::"), listen_on(first + 2, "::")]  # dual-stack: both families
    try:
        assert tree.run("relay.service") == 0  # first+1 and first+3: two, as min-free asks
        held.append(listen_on(first + 1, "::"))
        assert tree.run("relay.service") is None  # one left: the full check judges it
    finally:
        for sock in held:
            sock.close()
    assert tree.run("relay.service") == 0


def test_a_pool_is_free_when_one_family_can_serve(tree: Tree) -> None:
    """IPv4 wholly taken, IPv6 free: the service starts and serves IPv6 clients."""
    first = free_run(2)
    pool_tree(tree, first, first + 1, 1)
    held = [listen_on(first, "0.0.0.0"), listen_on(first + 1, "0.0.0.0")]
    try:
        assert tree.run("relay.service") == 0
        held += [listen_on(first, "::1"), listen_on(first + 1, "::1")]
        assert tree.run("relay.service") is None
    finally:
        for sock in held:
            sock.close()


def test_a_free_pool_costs_one_bind(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    first = free_run(1)
    pool_tree(tree, first, min(first + 20000, 65535), 1)
    calls: list[int] = []
    real = check.bind_errno

    def counted(spec: BindSpec, port: int, identity: object = None) -> int:
        calls.append(port)
        return real(spec, port)

    monkeypatch.setattr("portguard.freepath.binds.bind_errno", counted)
    assert tree.run("relay.service") == 0
    assert calls == [first]


def test_a_pool_compiles_to_one_entry_however_wide(tree: Tree) -> None:
    pool_tree(tree, 10000, 60000, 5, "udp")
    units = compile_units(load_registry(tree.root))
    ((first, last, need, families),) = units["relay.service"]
    assert (first, last, need) == (10000, 60000, 5)
    assert [(spec[2], spec[3]) for spec in families] == [("0.0.0.0", None), ("::", None)]

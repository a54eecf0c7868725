"""The packages are layers, and imports only go down: a model that knows no kernel, outside
systems that know no policy, a policy that knows no verb. Every import counts, the ones
inside functions too (the heavy ones are deliberately there)."""

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import SRC

PACKAGE = SRC / "portguard"
# Lowest first. The floor: freepath (the builtin-only free path, whose modules import only
# each other), errors (exit codes and the error classes every layer raises) and packages (a
# package's submodules without its __init__).
LAYERS = {
    "freepath": 0,
    "errors": 0,
    "packages": 0,
    "__init__": 0,
    "registry": 1,
    "host": 2,
    "policy": 3,
    "commands": 4,
    "cli": 5,
    "__main__": 6,
}


def layer(module: str) -> str:
    """The layer of a dotted module name inside portguard ('portguard' itself is the floor)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported(tree: ast.AST, module: str, *, is_package: bool) -> Iterator[str]:
    """Every portguard module (or package) an AST imports, relative imports resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "portguard")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "portguard":
                continue
            if base == "portguard":  # `from portguard import cgroups` names modules
                yield from (f"portguard.{a.name}" for a in node.names)
            else:
                yield base


def violations(sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    """`importer -> imported` for each import that goes up a layer or sideways at the floor."""
    found = []
    for module, (text, is_package) in sources.items():
        here = layer(module)
        for target in imported(ast.parse(text), module, is_package=is_package):
            there = layer(target)
            if there == "__version__":
                there = "__init__"
            if there not in LAYERS:
                found.append(f"{module} -> {target} (a layer this test does not know)")
            elif LAYERS[there] > LAYERS[here] or (
                LAYERS[here] == 0 and here not in ("__init__", there) and target != module
            ):
                found.append(f"{module} -> {target}")
    return found


def our_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path, PACKAGE): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_every_import_goes_down_the_layers() -> None:
    assert violations(our_sources()) == []


def test_every_module_is_in_a_known_layer() -> None:
    assert {layer(m) for m in our_sources()} <= set(LAYERS)


@pytest.mark.parametrize(
    ("module", "text", "is_package"),
    [
        ("portguard.registry.lint", "from portguard.host.sysctl import LocalPorts", False),
        ("portguard.host.sockets", "from portguard.policy.owners import Occupant", False),
        ("portguard.host.sockets", "def f():\n    from ..policy import owners\n", False),
        ("portguard.policy.guard", "import portguard.commands.check", False),
        ("portguard.freepath.trust", "from portguard import errors", False),
        ("portguard.errors", "from portguard.freepath import trust", False),
        ("portguard.registry", "from portguard import cli", True),
    ],
)
def test_the_check_sees_an_upward_import(module: str, text: str, is_package: bool) -> None:
    """The checker is not vacuous: each of these would break the layering."""
    assert len(violations({module: (text, is_package)})) == 1


def test_a_downward_import_is_fine() -> None:
    sources = {
        "portguard.commands.check": ("from portguard.policy.guard import check", False),
        "portguard.host.probe": ("from portguard.freepath.binds import bind_errno", False),
        "portguard.freepath.check": ("from portguard.freepath.trust import digest", False),
        "portguard.cli": ("from portguard import __version__", True),
    }
    assert violations(sources) == []


@pytest.mark.parametrize("package", ["registry", "host", "policy", "commands"])
def test_a_layer_package_is_a_one_line_docstring(package: str) -> None:
    """The free path and the generator import these: they must cost nothing but the file."""
    text = (PACKAGE / package / "__init__.py").read_text(encoding="utf-8")
    body = ast.parse(text).body
    assert len(body) == 1
    assert isinstance(body[0], ast.Expr)
    assert isinstance(body[0].value, ast.Constant)
    assert isinstance(body[0].value.value, str)
    assert len(text.splitlines()) == 1


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (anywhere in it), packages resolved to the
    module itself when it exists."""
    graph: dict[str, set[str]] = {}
    for module, (text, is_package) in sources.items():
        targets = set(imported(ast.parse(text), module, is_package=is_package))
        graph[module] = {t for t in targets if t in sources and t != module}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_imports_back_into_one_that_imports_it() -> None:
    """No import cycle, not even through imports inside functions."""
    assert cycles(import_graph(our_sources())) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    sources = {
        "portguard.commands.audit": ("def f():\n    import portguard.commands.exposition\n", False),
        "portguard.commands.exposition": ("from portguard.commands.audit import Audit\n", False),
    }
    assert cycles(import_graph(sources)) == [
        ["portguard.commands.audit", "portguard.commands.exposition"]
    ]


# A module past this many lines holds more than one concern; find the cut (STYLE.md).
MAX_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}

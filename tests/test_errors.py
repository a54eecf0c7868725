"""One tree of errors: every exception class a caller of another module may see is a
PortguardError (one line and an exit code, never a traceback); a module's own control flow
stays a private class of that module."""

import ast

from tests.conftest import SRC

PACKAGE = SRC / "portguard"


def exception_classes() -> dict[str, str]:
    """Each class in src/portguard that derives from an exception, with where it is."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base).endswith(("Error", "Exception", "Unavailable", "Refused",
                                            "Invalid", "InvalidValue", "Decline", "Problem"))
                for base in node.bases
            ):  # fmt: skip
                found[node.name] = f"{path.relative_to(SRC)}:{node.lineno}"
    return found


def test_every_public_exception_is_a_portguard_error() -> None:
    import importlib  # noqa: PLC0415

    from portguard.errors import PortguardError  # noqa: PLC0415

    outside = []
    for name, where in exception_classes().items():
        module = where.split(":")[0].removesuffix(".py").replace("/", ".")
        cls = getattr(importlib.import_module(module), name)
        if not name.startswith("_") and not issubclass(cls, PortguardError):
            outside.append(f"{where}: {name}")
    assert outside == []


def test_private_control_flow_stays_in_its_module() -> None:
    """A private exception raised in one module is never named in another."""
    private = {name: where for name, where in exception_classes().items() if name.startswith("_")}
    assert private, "the scan finds the private ones (fastreader._Decline, collisions._Tangled)"
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name, where in private.items():
            if str(path.relative_to(SRC)) != where.split(":")[0]:
                assert name not in text, f"{path.relative_to(SRC)} names {where}'s {name}"

"""A package's submodules without its __init__, and the __init__ still there for whoever asks."""

import subprocess
import sys

import pytest

from tests.conftest import SRC

PROBE = """
import sys
sys.path.insert(0, {src!r})
from portguard.packages import without_init
without_init({package!r})
import {submodule}
print(sorted(m for m in sys.modules if m.startswith({heavy!r})))
import {package}
print(hasattr({package}, "__wrapped__"), {package!r} + "." + {heavy_sub!r} in sys.modules)
print(callable(getattr({package}, {api!r})), {heavy!r} in sys.modules)
"""


@pytest.mark.parametrize(
    ("package", "submodule", "heavy", "heavy_sub", "api"),
    [
        # pystemd's __init__ brings its unit objects and lxml; the bus alone does not.
        ("pystemd", "pystemd.dbuslib", "lxml", "base", "SDUnit"),
        # pyroute2's brings IPRoute and asyncio; the netlink core alone does not.
        (
            "pyroute2",
            "pyroute2.netlink, pyroute2.netlink.diag",
            "pyroute2.iproute",
            "iproute",
            "IPRoute",
        ),
    ],
)
def test_a_submodule_imports_without_the_package_init(
    package: str, submodule: str, heavy: str, heavy_sub: str, api: str
) -> None:
    code = PROBE.format(src=str(SRC), package=package, submodule=submodule, heavy=heavy,
                        heavy_sub=heavy_sub, api=api)  # fmt: skip
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    skipped, probed, completed = done.stdout.splitlines()
    assert skipped == "[]"  # the heavy part was not imported
    assert probed == "False False"  # a probe for an optional dunder runs no __init__
    assert completed == "True True"  # asking for the API runs the __init__ after all


def test_a_missing_package_says_how_to_install_it() -> None:
    """A pip install without the `host` extra: the census's one line says what is missing."""
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r}); "
            "from portguard.packages import without_init; without_init('nowhere')")  # fmt: skip
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith(
        "ModuleNotFoundError: nowhere is not installed (Debian's "
        "python3-nowhere, or pip install 'portguard[host]')"
    )

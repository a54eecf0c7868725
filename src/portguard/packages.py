"""Part of a package without the rest: its submodules imported without its __init__.

pyroute2's and pystemd's __init__ import their whole API (pyroute2's IPRoute, NDB and
asyncio, 110-180 ms; pystemd's unit objects and lxml, ~15 ms), where portguard needs one
submodule of each: the netlink core for the census, the bus for unit facts.
"""

import importlib
import importlib.util
import sys


def without_init(name: str) -> None:
    """Register the package NAME so that its submodules import without running its
    __init__. Should anything later ask the package itself for a name it lacks, its
    __init__ runs then (a module's __getattr__, PEP 562): whoever needs all of it still
    gets all of it."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        # A pip install without the `host` extra (lint alone needs neither library).
        raise ModuleNotFoundError(
            f"{name} is not installed (Debian's python3-{name}, or pip install 'portguard[host]')",
            name=name,
        )
    if spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(attribute: str) -> object:
        if attribute.startswith("__"):  # probes for optional dunders: the answer is no
            raise AttributeError(attribute)
        # `from pyroute2 import config` asks for a submodule: that is an import, as usual.
        if importlib.util.find_spec(f"{name}.{attribute}") is not None:
            return importlib.import_module(f"{name}.{attribute}")
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__dict__["__getattr__"] = complete
    sys.modules[name] = package

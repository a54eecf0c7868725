"""The registry as commands trust it: validated, owned by root, never stale.

`load_registry` reads the YAML, validates it as `lint` does and refreshes the compiled form
in /run/portguard; `compiled_registry` gives the same Registry from that compiled form while
the files' hash matches, so `check` on a busy port, `why` and `audit` skip the YAML. Kept
apart from check.py so those verbs import no more than they use.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

from portguard import hotpath
from portguard.errors import ConfigError
from portguard.host import probe
from portguard.registry import compiled

if TYPE_CHECKING:
    from portguard.registry.entries import Registry


def load_registry(path: Path) -> "Registry":
    """The whole registry, validated like `lint`; refreshes the hot path's compiled form."""
    from portguard.registry.entries import RegistrySource  # noqa: PLC0415
    from portguard.registry.lint import check_registry  # noqa: PLC0415 - YAML only off the free path
    from portguard.registry.model import load  # noqa: PLC0415

    root = str(path) if path.is_dir() else None
    source = RegistrySource.installed(path) if root else RegistrySource(path)
    files = [str(f) for f in source.files]
    watched = [*files, str(path)] + ([os.path.join(root, "registry.d")] if root else [])
    unsafe = hotpath.first_unsafe(watched)
    if unsafe:
        raise ConfigError(hotpath.distrust(unsafe))
    before = hotpath.digest(root) if root else None
    loaded = load(source)
    errors = [f for f in check_registry(loaded, None) if f.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"registry invalid: {errors[0]}{more}", hint="run 'portguard lint'")
    if root and before is not None and hotpath.digest(root) == before:
        # Stored only when the files did not change while we parsed them.
        registry = loaded.registry
        hotpath.store_cache(root, before[0], compile_units(registry), compiled.plain(registry))
    return loaded.registry


def compiled_registry(root: Path) -> "Registry | None":
    """The registry from its compiled form when that matches the files now (a busy port's
    check, `why` and `audit` then parse no YAML); None when only the YAML can say."""
    if not root.is_dir():
        return None
    found = hotpath.digest(str(root))
    return compiled.registry_of(hotpath.load_registry(str(root), found[0])) if found else None


def compile_units(registry: "Registry") -> dict[str, tuple[hotpath.BindSpec, ...]]:
    """Each unit's binds as the hot path runs them (a template's port is its instance)."""
    units: dict[str, tuple[hotpath.BindSpec, ...]] = {}
    for name, entry in registry.units.items():
        specs: list[hotpath.BindSpec] = []
        for listen in entry.listen:
            template = listen.is_template
            claim = listen.claim("1") if template else listen.claim()
            specs.extend(probe.spec_of(b, template=template) for b in probe.binds(claim))
        units[name] = tuple(specs)
    return units

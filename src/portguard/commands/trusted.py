"""The registry as commands trust it: validated, owned by root, never stale.

`registry_at` is how every verb reads it: the compiled form in /run/portguard while the
files' hash matches (`compiled_registry`: `check` on a busy port, `why`, `audit` and `wait`
then parse no YAML), else the YAML, validated as `lint` does, which refreshes the compiled
form (`load_registry`). Kept apart from check.py so those verbs import no more than they use.
"""

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from portguard.errors import ConfigError, NoRegistry
from portguard.freepath import cache, trust
from portguard.freepath.binds import BindSpec, PoolSpec
from portguard.host import probe
from portguard.registry import compiled

if TYPE_CHECKING:
    from portguard.registry.entries import Registry


def registry_at(path: "str | Path") -> "Registry":
    """The registry at PATH (a directory or one file) as every verb trusts it; NoRegistry when
    there is none, ConfigError when it is invalid or unsafe."""
    if not os.path.exists(path):
        raise NoRegistry(f"no registry at {path}")
    return compiled_registry(path) or load_registry(Path(path))


def load_registry(path: Path) -> "Registry":
    """The whole registry, validated like `lint`; refreshes the hot path's compiled form."""
    from portguard.registry.entries import RegistrySource  # noqa: PLC0415
    from portguard.registry.lint import check_registry  # noqa: PLC0415 - YAML only off the free path
    from portguard.registry.model import load  # noqa: PLC0415

    root = str(path) if path.is_dir() else None
    source = RegistrySource.installed(path) if root else RegistrySource(path)
    files = [str(f) for f in source.files]
    watched = [*files, str(path)] + ([os.path.join(root, "registry.d")] if root else [])
    unsafe = trust.first_unsafe(watched)
    if unsafe:
        raise ConfigError(trust.distrust(unsafe))
    before = trust.digest(root) if root else None
    loaded = load(source)
    errors = [f for f in check_registry(loaded, None) if f.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"registry invalid: {errors[0]}{more}", hint="run 'portguard lint'")
    if root and before is not None and trust.digest(root) == before:
        # Stored only when the files did not change while we parsed them.
        registry = loaded.registry
        cache.store_cache(root, before[0], compile_units(registry), compiled.plain(registry))
    return loaded.registry


def compiled_registry(root: "str | Path") -> "Registry | None":
    """The registry from its compiled form when that matches the files now (a busy port's
    check, `why` and `audit` then parse no YAML); None when only the YAML can say."""
    if not os.path.isdir(root):
        return None
    found = trust.digest(str(root))
    return (
        compiled.registry_of(cache.load_compiled_registry(str(root), found[0])) if found else None
    )


def compile_units(registry: "Registry") -> dict[str, tuple[BindSpec | PoolSpec, ...]]:
    """Each unit's binds as the hot path runs them (a template's port is its instance), and
    each pool as one PoolSpec: its range, its min-free and a bind per family."""
    units: dict[str, tuple[BindSpec | PoolSpec, ...]] = {}
    for name, entry in registry.units.items():
        specs: list[BindSpec | PoolSpec] = []
        for listen in entry.listen:
            template = listen.is_template
            claim = listen.claim("1") if template else listen.claim()
            if claim.pool is not None:
                one = replace(claim, last=claim.first)
                families = tuple(probe.spec_of(b, template=True) for b in probe.binds(one))
                specs.append((claim.first, claim.last, claim.pool, families))
                continue
            specs.extend(probe.spec_of(b, template=template) for b in probe.binds(claim))
        units[name] = tuple(specs)
    return units


# How long a guard waits for another to compile a changed registry before going on without.
COMPILE_WAIT_S = 5.0


def compile_once(root: str) -> bool:
    """Whether ROOT's compiled form is there now: compiled here, or by another guard of a boot
    storm this one waited for (on a lock beside the compiled form, COMPILE_WAIT_S at most),
    so that 200 units started after a registry change parse the YAML once, not 200 times."""
    import fcntl  # noqa: PLC0415
    import time  # noqa: PLC0415

    try:
        os.makedirs(cache.CACHE_DIR, mode=0o755, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        lock = os.open(f"{cache.cache_path(root)}.lock", flags, 0o600)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + COMPILE_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False  # the full check compiles it itself
                time.sleep(0.005)
        if _compiled(root):
            return True  # compiled by the guard this one waited for
        try:
            load_registry(Path(root))  # validates, and stores the compiled form
        except ConfigError:
            return False  # the full check reports it
        return _compiled(root)
    finally:
        os.close(lock)  # and with it the lock


def _compiled(root: str) -> bool:
    """Whether ROOT's compiled form matches its files now."""
    found = trust.digest(root)
    return found is not None and cache.load_cache(root, found[0]) is not None

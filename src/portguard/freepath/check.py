"""The free path itself: `check` on a unit whose ports are all free, from the compiled form.

0 when every bind of the unit is free now; None for anything else (a busy port, a cache miss,
an unregistered unit, unusual flags, unsafe files), and the full `check` decides and reports.
Its command line is read here, without argparse, and so is the unit a guard runs in (from
its cgroup): the free path must not pay for argparse or `os`.
"""

import _socket
import posix

from portguard.freepath.binds import (
    BindSpec,
    Identity,
    PoolSpec,
    bind_errno,
    parse_bind_options,
    pool_serves,
    with_socket_options,
)
from portguard.freepath.cache import Packed, load_cache, unpack
from portguard.freepath.nat import untouched
from portguard.freepath.trust import REGISTRY_DIR, digest, is_dir

_UNIT_SUFFIXES = (".service", ".socket", ".scope")
# A unit's compiled binds and pools, and the template instance standing for a None port.
Compiled = tuple[BindSpec | PoolSpec, ...]
Entry = tuple[Compiled, int | None]
_POOL_FIELDS = 4  # a PoolSpec's; a BindSpec has 8
# mypy takes the name TYPE_CHECKING at its word; the free path imports no `typing`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing_extensions import TypeIs
# Past this many ports the full `check` need not have the census begun early (host/prefetch):
# it reads a range's first busy port, not every one of 50,000.
_PREFETCH_PORTS = 64


def run(argv: list[str]) -> int | None:
    """0 when every bind of the unit is free now; None to let the full `check` decide."""
    resolved = _resolve(argv)
    if resolved is None:
        return None
    binds, pools, identity, socket_options, unit, key = resolved
    for spec, port in binds:
        if bind_errno(with_socket_options(spec, socket_options), port, identity):
            return None
    for pool in pools:
        if not pool_serves(pool, identity, socket_options):
            return None
    # A pool's ports are not asked of NAT: one redirected port is one the service skips.
    # Free for bind(); free for the traffic too, unless a NAT rule may take it (DESIGN rule 5).
    ports = [("tcp" if spec[1] == _socket.SOCK_STREAM else "udp", port, spec[2])
             for spec, port in binds]  # fmt: skip
    return 0 if untouched(unit, key, ports) else None


def claimed_ports(argv: list[str]) -> list[tuple[str, int]] | None:
    """("tcp" or "udp", port) of each bind a `check` command line's unit claims, as compiled;
    None when the free path could not tell (the full `check` finds out)."""
    resolved = _resolve(argv)
    if resolved is None or len(resolved[0]) > _PREFETCH_PORTS:
        return None
    return [
        ("tcp" if spec[1] == _socket.SOCK_STREAM else "udp", port) for spec, port in resolved[0]
    ]


def cold_root(argv: list[str]) -> str | None:
    """The registry root of a `check` whose compiled form is missing or stale (the first start
    after a registry change), when this process (root) may write it; else None."""
    parsed = check_args(argv)
    if parsed is None or posix.geteuid() != 0 or not is_dir(parsed[0]):
        return None
    found = digest(parsed[0])
    return parsed[0] if found and load_cache(parsed[0], found[0]) is None else None


def lookup(units: dict[str, Packed], unit: str) -> Entry | None:
    """The unit's binds and, for a template instance, the instance as a port."""
    if unit in units:
        found = unpack(units[unit])
        return None if found is None else (found, None)
    prefix, dot, suffix = unit.rpartition(".")
    head, at, instance = prefix.partition("@")
    if not (dot and at and instance.isdigit()):
        return None
    template = units.get(f"{head}@.{suffix}")
    found = None if template is None else unpack(template)
    return None if found is None else (found, int(instance))


def check_args(argv: list[str]) -> tuple[str, str | None, list[str]] | None:
    """(registry root, unit, the rest) of a `check` command line; None for anything else."""
    args = list(argv)
    if not args or args.pop(0) != "check":
        return None
    root = REGISTRY_DIR
    if len(args) >= 2 and args[0] == "--registry":
        root = args[1]
        del args[:2]
    unit = args.pop(0) if args and not args[0].startswith("-") else None
    return root, unit, args


def _resolve(
    argv: list[str],
) -> (
    tuple[list[tuple[BindSpec, int]], list[PoolSpec], Identity, frozenset[str] | None, str, bytes]
    | None
):
    """The unit's compiled binds with their ports, its pools, who binds, a socket unit's
    options, the unit and the registry's hash."""
    parsed = check_args(argv)
    if parsed is None:
        return None
    root, unit, args = parsed
    try:
        identity, socket_options, dynamic = parse_bind_options(args)
    except ValueError:
        return None  # the full command says what is wrong
    if identity not in (None, (0, True)) and posix.geteuid() != 0:
        return None
    unit = unit or own_unit()
    if unit is None or not is_dir(root):
        return None
    found = digest(root)
    units = load_cache(root, found[0]) if found else None
    entry = lookup(units, unit) if units else None
    if entry is None or found is None:
        return None
    specs, instance = entry
    binds = []
    pools = []
    for spec in specs:
        if dynamic and (spec[3][0][5] if _is_pool(spec) else spec[5]):
            return None  # SO_REUSEPORT under a uid picked at start: the full check says so
        if _is_pool(spec):
            pools.append(spec)
            continue
        port = spec[3] if spec[3] is not None else instance
        if port is None or not 0 < port < 65536:
            return None
        binds.append((spec, port))
    return binds, pools, identity, socket_options, unit, found[0]


def _is_pool(spec: "BindSpec | PoolSpec") -> "TypeIs[PoolSpec]":
    return len(spec) == _POOL_FIELDS


def own_unit(proc_self_cgroup: str | None = None) -> str | None:
    """The innermost unit of this process's cgroup v2 path when it is a service or a socket
    (a guard in `x.service`, or in a cgroup below it such as a delegated unit's `.control`);
    None elsewhere. PROC_SELF_CGROUP: /proc/self/cgroup's text, read when not given."""
    if proc_self_cgroup is None:
        try:
            with open("/proc/self/cgroup", "rb") as handle:
                proc_self_cgroup = handle.read().decode()
        except OSError:
            return None
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            for part in reversed(line[3:].split("/")):
                if part.endswith(_UNIT_SUFFIXES):
                    return part if part.endswith((".service", ".socket")) else None
    return None

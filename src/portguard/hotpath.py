"""The free path of `portguard check`, from builtin modules only.

`check` runs before every guarded start at every boot, and almost always finds its ports
free. This module proves exactly that case and nothing else: it reads the registry's
files, finds their compiled form by a hash of their contents (so it can never be stale),
trial-binds the unit's precomputed binds and exits 0. Anything else -- a busy port, a
cache miss, an unregistered unit, unusual flags, unsafe files -- returns None, and the
full implementation decides and reports. Importing argparse, json or dataclasses alone
would cost more than the interpreter's own start.
"""

import _socket
import marshal
import os
from _blake2 import blake2b

REGISTRY_DIR = "/etc/portguard"
CACHE_DIR = "/run/portguard"
FORMAT = 1

# One bind as compiled: family, socket type, host, port (None: the template instance),
# SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY.
BindSpec = tuple[int, int, str, int | None, bool, bool, bool]
# A unit's compiled binds, and the template instance standing for a None port.
Entry = tuple[tuple[BindSpec, ...], int | None]


def registry_files(root: str) -> list[str]:
    """registry.yaml, then registry.d/*.yaml in lexical order (hidden files skipped)."""
    dropin_dir = os.path.join(root, "registry.d")
    try:
        names = sorted(n for n in os.listdir(dropin_dir) if n.endswith(".yaml") and n[0] != ".")
    except OSError:
        names = []
    dropins = [os.path.join(dropin_dir, n) for n in names]
    main = os.path.join(root, "registry.yaml")
    return [main, *dropins] if os.path.exists(main) or not dropins else dropins


def is_safe(st: os.stat_result) -> bool:
    """Root's and writable by root alone: a registry decides which services may start."""
    mode = st.st_mode
    return st.st_uid == 0 and not mode & 0o002 and not (mode & 0o020 and st.st_gid != 0)


def first_unsafe(paths: list[str]) -> str | None:
    """The first of PATHS that exists and is not root's alone (check and the generator agree)."""
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if not is_safe(st):
            return path
    return None


def distrust(path: str) -> str:
    """Why PATH is refused, with the fix: the one wording of check's error and the generator's."""
    return (
        f"{path}: writable by a user other than root, so it is not trusted "
        f"(fix: chown root:root {path}; chmod go-w {path})"
    )


def digest(root: str) -> tuple[bytes, list[str]] | None:
    """A hash of the registry's names and contents; None when a file is missing or unsafe."""
    files = registry_files(root)
    hashed = blake2b(digest_size=32)
    for directory in (root, os.path.join(root, "registry.d")):
        try:
            if not is_safe(os.stat(directory)):
                return None
        except FileNotFoundError:
            continue
        except OSError:
            return None
    for path in files:
        data = _read_trusted(path)
        if data is None:
            return None
        hashed.update(path.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return hashed.digest(), files


def _read_trusted(path: str) -> bytes | None:
    """The file's bytes if it is root's and writable by root alone, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # fstat of the opened file: no window for a swap between the check and the read.
        if not is_safe(os.fstat(fd)):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def cache_path(root: str) -> str:
    name = blake2b(os.path.abspath(root).encode(), digest_size=8).hexdigest()
    return os.path.join(CACHE_DIR, f"registry-{name}.marshal")


def load_cache(root: str, key: bytes) -> dict[str, tuple[BindSpec, ...]] | None:
    """The compiled units for KEY, or None; only a root-owned cache is believed."""
    data = _read_trusted(cache_path(root))
    if data is None:
        return None
    try:
        cache = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(cache, dict) or cache.get("format") != FORMAT or cache.get("key") != key:
        return None
    units = cache.get("units")
    return units if isinstance(units, dict) else None


def store_cache(root: str, key: bytes, units: dict[str, tuple[BindSpec, ...]]) -> bool:
    """Write the compiled form atomically; only root may, and failure just costs speed."""
    if os.geteuid() != 0:
        return False
    path = cache_path(root)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, marshal.dumps({"format": FORMAT, "key": key, "units": units}))
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        return False
    return True


def bind_errno(spec: BindSpec, port: int) -> int:
    """0 when a bind with the service's options succeeds now, else its errno."""
    family, kind, host, _, reuseaddr, reuseport, v6only = spec
    try:
        sock = _socket.socket(family, kind)
    except OSError as exc:
        return exc.errno or -1
    try:
        if reuseaddr:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        if family == _socket.AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, int(v6only))
        sock.bind((host, port))
    except OSError as exc:
        return exc.errno or -1
    finally:
        sock.close()
    return 0


def unit_of_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup", "rb") as handle:
            text = handle.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            last = line.rstrip("/").rpartition("/")[2]
            return last if last.endswith((".service", ".socket")) else None
    return None


def _lookup(units: dict[str, tuple[BindSpec, ...]], unit: str) -> Entry | None:
    """The unit's binds and, for a template instance, the instance as a port."""
    if unit in units:
        return units[unit], None
    prefix, dot, suffix = unit.rpartition(".")
    head, at, instance = prefix.partition("@")
    if not (dot and at and instance.isdigit()):
        return None
    template = units.get(f"{head}@.{suffix}")
    return None if template is None else (template, int(instance))


def run(argv: list[str]) -> int | None:
    """0 when every bind of the unit is free now; None to let the full `check` decide."""
    args = list(argv)
    if not args or args.pop(0) != "check":
        return None
    root = REGISTRY_DIR
    if len(args) >= 2 and args[0] == "--registry":
        root = args[1]
        del args[:2]
    if len(args) > 1 or (args and args[0].startswith("-")):
        return None
    unit = args[0] if args else unit_of_cgroup()
    if unit is None or not os.path.isdir(root):
        return None
    found = digest(root)
    units = load_cache(root, found[0]) if found else None
    entry = _lookup(units, unit) if units else None
    if entry is None:
        return None
    binds, instance = entry
    for spec in binds:
        port = spec[3] if spec[3] is not None else instance
        if port is None or not 0 < port < 65536 or bind_errno(spec, port):
            return None
    return 0

"""The free path of `portguard check`, from builtin modules only.

`check` runs before every guarded start at every boot, and almost always finds its ports
free. This module proves exactly that case and nothing else: it reads the registry's
files, finds their compiled form by a hash of their contents (so it can never be stale),
trial-binds the unit's precomputed binds -- as the identity the drop-in names (--user,
--caps: seteuid for the bind alone) and with a socket unit's own options -- and exits 0.
Anything else -- a busy port, a cache miss, an unregistered unit, unusual flags, unsafe
files -- returns None, and the full implementation decides and reports. Importing
argparse, json or dataclasses alone would cost more than the interpreter's own start; even
`os` (pure Python, with posixpath and _collections_abc) costs a tenth of it under `-S`, so
the few path operations needed are written here over the builtin `posix`.
"""

import _socket
import errno
import marshal
import posix
import pwd
from _blake2 import blake2b

REGISTRY_DIR = "/etc/portguard"
CACHE_DIR = "/run/portguard"
FORMAT = 4

# One bind as compiled: family, socket type, host, port (None: the template instance),
# SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY, IP_FREEBIND.
BindSpec = tuple[int, int, str, int | None, bool, bool, bool, bool]
# Who binds: a uid, and whether it may bind below net.ipv4.ip_unprivileged_port_start
# (CAP_NET_BIND_SERVICE). None: this process as it is.
Identity = tuple[int, bool] | None
# `check`'s options that say how the unit binds (the drop-in writes them; policy/mirror.py).
BIND_OPTIONS = ("--user", "--caps", "--socket-options")
SOCKET_OPTIONS = ("reuseaddr", "reuseport", "freebind", "transparent", "v6only")
_IP_FREEBIND = 15  # linux/in.h; it lets an AF_INET6 socket bind a missing address too
NOBODY = 65534
# A unit's compiled binds, and the template instance standing for a None port.
Entry = tuple[tuple[BindSpec, ...], int | None]


def registry_files(root: str) -> list[str]:
    """registry.yaml, then registry.d/*.yaml in lexical order (hidden files skipped)."""
    dropin_dir = _join(root, "registry.d")
    try:
        names = sorted(n for n in posix.listdir(dropin_dir) if n.endswith(".yaml") and n[0] != ".")
    except OSError:
        names = []
    dropins = [_join(dropin_dir, n) for n in names]
    main = _join(root, "registry.yaml")
    return [main, *dropins] if _exists(main) or not dropins else dropins


def _join(directory: str, name: str) -> str:
    """os.path.join of a directory and a plain name."""
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def _exists(path: str) -> bool:
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def _is_dir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except (OSError, ValueError):
        return False


def _normpath(path: str) -> str:
    """os.path.abspath without `os`: absolute, with no empty, `.` or `..` parts."""
    if not path.startswith("/"):
        path = f"{posix.getcwd()}/{path}"
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def realpath(path: str) -> str:
    """os.path.realpath(PATH, strict=True) without `os`: every symbolic link resolved, as the
    kernel follows them; raises FileNotFoundError for a missing part, OSError for any other
    failure (a part that is not a directory, a loop), as stat(2) of PATH would."""
    if not path.startswith("/"):
        path = f"{posix.getcwd()}/{path}"
    resolved = ""  # the real path so far, "" for /
    todo = [part for part in reversed(path.split("/")) if part]
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            resolved = resolved.rpartition("/")[0]
            continue
        candidate = f"{resolved}/{part}"
        kind = posix.lstat(candidate).st_mode & 0o170000
        if kind != 0o120000:  # not a symbolic link
            if todo and kind != 0o040000:  # as the kernel: only a directory has parts
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
            resolved = candidate
            continue
        links += 1
        if links > 40:  # the kernel's own limit on links followed in one lookup
            raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
        target = posix.readlink(candidate)
        if target.startswith("/"):
            resolved = ""
        todo.extend(part for part in reversed(target.split("/")) if part)
    return resolved or "/"


def is_safe(st: posix.stat_result) -> bool:
    """Root's and writable by root alone: a registry decides which services may start."""
    mode = st.st_mode
    return st.st_uid == 0 and not mode & 0o002 and not (mode & 0o020 and st.st_gid != 0)


def first_unsafe(paths: list[str]) -> str | None:
    """The first place a user other than root could change on the way to any of PATHS that
    exists: the path itself, or a directory from / down to it, symbolic links resolved (as
    sshd's StrictModes walks). A world-writable directory may be on the way only when it is
    sticky and root's, so that only root can replace what is in it (/tmp). Check, the
    generator and the cache agree on it."""
    judged: dict[str, bool] = {}
    for path in paths:
        try:
            real = realpath(path)
        except FileNotFoundError:
            continue
        except OSError:
            return path  # a path that cannot be followed cannot be vouched for
        places = [real]
        while places[-1] != "/":
            places.append(places[-1].rpartition("/")[0] or "/")
        for index, place in enumerate(reversed(places)):
            last = index == len(places) - 1
            if not last and judged.get(place):
                continue
            try:
                st = posix.stat(place)
            except OSError:
                return place
            sticky_root_dir = not last and st.st_uid == 0 and st.st_mode & 0o1000
            if not (is_safe(st) or sticky_root_dir):
                return path if place == real else place
            judged[place] = True
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
    if first_unsafe([root, _join(root, "registry.d"), *files]) is not None:
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
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        # fstat of the opened file: no window for a swap between the check and the read.
        if not is_safe(posix.fstat(fd)):
            return None
        chunks = []
        while chunk := posix.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        posix.close(fd)


def cache_path(root: str) -> str:
    name = blake2b(_normpath(root).encode(), digest_size=8).hexdigest()
    return _join(CACHE_DIR, f"registry-{name}.marshal")


def load_cache(root: str, key: bytes) -> dict[str, tuple[BindSpec, ...]] | None:
    """The compiled units for KEY, or None; only a root-owned cache is believed."""
    units = _load(root, key, "units")
    return units if isinstance(units, dict) else None


def load_compiled_registry(root: str, key: bytes) -> object:
    """The whole registry in marshal's types (registry/compiled.py) for KEY, or None."""
    packed = _load(root, key, "registry")
    if not isinstance(packed, bytes):
        return None
    try:
        return marshal.loads(packed)
    except (EOFError, ValueError, TypeError):
        return None


def _load(root: str, key: bytes, part: str) -> object:
    data = _read_trusted(cache_path(root))
    if data is None:
        return None
    try:
        cache = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(cache, dict) or cache.get("format") != FORMAT or cache.get("key") != key:
        return None
    return cache.get(part)


def store_cache(
    root: str,
    key: bytes,
    units: dict[str, tuple[BindSpec, ...]],
    registry: object = None,
) -> bool:
    """Write the compiled form atomically; only root may, and failure just costs speed."""
    import os  # noqa: PLC0415 - only when compiling, never on the free path

    if os.geteuid() != 0:
        return False
    path = cache_path(root)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            # The whole registry stays packed, so the free path, which needs only its
            # units' binds, does not unpack a 1,000-unit registry at every start.
            packed = marshal.dumps(registry)  # type: ignore[arg-type] # compiled.plain's types
            data = marshal.dumps({"format": FORMAT, "key": key, "units": units,
                                  "registry": packed})  # fmt: skip
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        # A full /run must not keep our half-written temporary. (No contextlib: builtins only.)
        try:  # noqa: SIM105
            os.unlink(temporary)
        except OSError:
            pass
        return False
    return True


def bind_errno(spec: BindSpec, port: int, identity: Identity = None) -> int:
    """0 when a bind with the service's options, as the service's identity, succeeds now,
    else its errno. Taking on another identity needs root (the drop-in's `+`)."""
    if identity is None or identity == (0, True):
        return _bind(spec, port)
    uid, may_bind = identity
    # A non-zero effective uid empties the effective capabilities, CAP_NET_BIND_SERVICE too;
    # root without that capability binds as nobody, which differs from it in nothing else
    # a bind() without SO_REUSEPORT looks at.
    posix.seteuid(uid or NOBODY)
    try:
        code = _bind(spec, port)
    finally:
        posix.seteuid(0)
    if code == errno.EACCES and may_bind:
        code = _bind(spec, port)  # a privileged port: as root, which has the capability
    return code


def _bind(spec: BindSpec, port: int) -> int:
    family, kind, host, _, reuseaddr, reuseport, v6only, freebind = spec
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
        if freebind:
            sock.setsockopt(_socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((host, port))
    except OSError as exc:
        return exc.errno or -1
    finally:
        sock.close()
    return 0


def parse_bind_options(args: list[str]) -> tuple[Identity, frozenset[str] | None]:
    """The identity and the socket options (None: the registry's) of --user, --caps and
    --socket-options; raises ValueError naming what is wrong."""
    values: dict[str, str] = {}
    while args:
        flag, equals, value = args.pop(0).partition("=")
        if flag not in BIND_OPTIONS or flag in values:
            raise ValueError(f"unexpected argument {flag}")
        if not equals:
            if not args:
                raise ValueError(f"{flag} needs a value")
            value = args.pop(0)
        values[flag] = value
    identity: Identity = None
    if "--user" in values or "--caps" in values:
        uid = user_id(values.get("--user", "root"))
        caps = values.get("--caps", "net_bind_service" if uid == 0 else "none")
        if caps not in ("net_bind_service", "none"):
            raise ValueError(f"--caps {caps}: expected net_bind_service or none")
        identity = (uid, caps == "net_bind_service")
    options = None
    if "--socket-options" in values:
        options = frozenset(o for o in values["--socket-options"].split(",") if o)
        unknown = sorted(options - set(SOCKET_OPTIONS))
        if unknown:
            raise ValueError(f"--socket-options: unknown {', '.join(unknown)}")
    return identity, options


def user_id(user: str) -> int:
    """USER's uid (a name or a number); raises ValueError for a user this host does not know."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"--user {user}: no such user") from None


def with_socket_options(spec: BindSpec, options: frozenset[str] | None) -> BindSpec:
    """SPEC as PID 1 binds a .socket unit's address: its options replace the registry's."""
    if options is None:
        return spec
    family, kind, host, port, _, _, v6only, _ = spec
    v6only = v6only or ("v6only" in options and family == _socket.AF_INET6)
    freebind = "freebind" in options or "transparent" in options
    return (family, kind, host, port, "reuseaddr" in options, "reuseport" in options, v6only,
            freebind)  # fmt: skip


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


def _check_args(argv: list[str]) -> tuple[str, str | None, list[str]] | None:
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


def cold_root(argv: list[str]) -> str | None:
    """The registry root of a `check` whose compiled form is missing or stale (the first start
    after a registry change), when this process (root) may write it; else None."""
    parsed = _check_args(argv)
    if parsed is None or posix.geteuid() != 0 or not _is_dir(parsed[0]):
        return None
    found = digest(parsed[0])
    return parsed[0] if found and load_cache(parsed[0], found[0]) is None else None


def run(argv: list[str]) -> int | None:
    """0 when every bind of the unit is free now; None to let the full `check` decide."""
    resolved = _resolve(argv)
    if resolved is None:
        return None
    binds, identity, socket_options = resolved
    for spec, port in binds:
        if bind_errno(with_socket_options(spec, socket_options), port, identity):
            return None
    return 0


def claimed_ports(argv: list[str]) -> list[tuple[str, int]] | None:
    """("tcp" or "udp", port) of each bind a `check` command line's unit claims, as compiled;
    None when the free path could not tell (the full `check` finds out)."""
    resolved = _resolve(argv)
    if resolved is None:
        return None
    return [
        ("tcp" if spec[1] == _socket.SOCK_STREAM else "udp", port) for spec, port in resolved[0]
    ]


def _resolve(
    argv: list[str],
) -> tuple[list[tuple[BindSpec, int]], Identity, frozenset[str] | None] | None:
    """The unit's compiled binds with their ports, who binds and a socket unit's options."""
    parsed = _check_args(argv)
    if parsed is None:
        return None
    root, unit, args = parsed
    try:
        identity, socket_options = parse_bind_options(args)
    except ValueError:
        return None  # the full command says what is wrong
    if identity not in (None, (0, True)) and posix.geteuid() != 0:
        return None
    unit = unit or unit_of_cgroup()
    if unit is None or not _is_dir(root):
        return None
    found = digest(root)
    units = load_cache(root, found[0]) if found else None
    entry = _lookup(units, unit) if units else None
    if entry is None:
        return None
    specs, instance = entry
    binds = []
    for spec in specs:
        port = spec[3] if spec[3] is not None else instance
        if port is None or not 0 < port < 65536:
            return None
        binds.append((spec, port))
    return binds, identity, socket_options

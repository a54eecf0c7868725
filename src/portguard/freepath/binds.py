"""The trial bind: the service's own bind() without listen(), as the service's identity and
with its socket options. `check`'s free path and the full probe (host/probe.py) both bind
through here, so the kernel is asked one way."""

import _socket
import posix

# One bind as compiled: family, socket type, host, port (None: the template instance),
# SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY, IP_FREEBIND.
BindSpec = tuple[int, int, str, int | None, bool, bool, bool, bool]
# A pool the service binds on demand (registry `pool: true`): its first and last port, how
# many must be bindable (min-free), and one bind per family with the port left None.
PoolSpec = tuple[int, int, int, tuple[BindSpec, ...]]
# Who binds: a uid, and whether it may bind below net.ipv4.ip_unprivileged_port_start
# (CAP_NET_BIND_SERVICE). None: this process as it is.
Identity = tuple[int, bool] | None
# `check`'s options that say how the unit binds (the drop-in writes them; policy/mirror.py).
BIND_OPTIONS = ("--user", "--caps", "--socket-options")
# `--user dynamic`: a DynamicUser= unit, whose uid systemd picks at start. It binds as an
# unprivileged user, which is all a bind looks at, except for SO_REUSEPORT (shared within
# one uid): a claim with reuseport is then not judged.
DYNAMIC = "dynamic"
SOCKET_OPTIONS = ("reuseaddr", "reuseport", "freebind", "transparent", "v6only")
_IP_FREEBIND = 15  # linux/in.h; it lets an AF_INET6 socket bind a missing address too
_EACCES = 13  # errno's, without importing it on the free path
NOBODY = 65534


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
    if code == _EACCES and may_bind:
        code = _bind(spec, port)  # a privileged port: as root, which has the capability
    return code


def pool_serves(pool: PoolSpec, identity: Identity = None,
                options: frozenset[str] | None = None) -> bool:  # fmt: skip
    """Whether the service could bind min-free ports of POOL now in one family at least:
    it draws them as it needs them, so a taken port is one it skips (DESIGN rule 6). Binds
    port after port and stops as soon as it knows: a free pool costs one bind."""
    first, last, need, specs = pool
    specs = tuple(with_socket_options(spec, options) for spec in specs)
    bound = [0] * len(specs)
    for port in range(first, last + 1):
        for index, spec in enumerate(specs):
            if not bind_errno(spec, port, identity):
                bound[index] += 1
                if bound[index] >= need:
                    return True
    return False


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


def parse_bind_options(args: list[str]) -> tuple[Identity, frozenset[str] | None, bool]:
    """The identity, the socket options (None: the registry's) and whether the user is a
    DynamicUser= one, of --user, --caps and --socket-options; raises ValueError naming what
    is wrong."""
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
    dynamic = values.get("--user") == DYNAMIC
    if "--user" in values or "--caps" in values:
        uid = NOBODY if dynamic else user_id(values.get("--user", "root"))
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
    return identity, options, dynamic


def user_id(user: str) -> int:
    """USER's uid (a name or a number); raises ValueError for a user this host does not know."""
    if user.isdigit():
        return int(user)
    import pwd  # noqa: PLC0415 - a user named, not numbered: rare, and not free

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

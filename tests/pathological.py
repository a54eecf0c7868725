"""Registries built to be pathological, about 1 MB each (issue 24): what a config-management
template gone wrong, or a fuzzer, hands `lint` and the generator. Shared by the fuzz corpus
(tests/commands/test_generator_fuzz.py), lint's tests and the benchmark (bench/bench.py).

Each builder returns the file's bytes; VALID says which ones lint accepts (with warnings).
"""

from collections.abc import Callable

SIZE = 1 << 20
UNITS = 20_000


def _units(listen: Callable[[int], str], extra: str = "") -> bytes:
    lines = ["version: 1", "units:"]
    for n in range(UNITS):
        lines += [f"  u{n:05d}.service:", f"    listen: [{listen(n)}]"]
        if extra:
            lines.append(f"    {extra}")
    return ("\n".join(lines) + "\n").encode()


def one_port() -> bytes:
    """20,000 units on 8080/tcp: 200 million colliding pairs, one mistake."""
    return _units(lambda n: "8080/tcp")


def one_port_mixed() -> bytes:
    """Every other unit on the wildcard, the rest each on an address of its own: the wildcard
    joins them all."""
    return _units(
        lambda n: "8080/tcp" if n % 2 else f"'127.0.{n // 250 % 250}.{n % 250 + 1}:8080/tcp'"
    )


def one_port_shared() -> bytes:
    """20,000 units sharing 5353/udp with SO_REUSEADDR, as mDNS responders do: valid, one
    warning."""
    return _units(lambda n: "5353/udp", extra="reuseaddr: true")


def ranges() -> bytes:
    """20,000 different ranges over one another: nothing to compress, so lint stops."""
    return _units(lambda n: f"{1000 + n}-60000/tcp")


def deep_flow() -> bytes:
    """1 MB of nested flow sequences."""
    half = SIZE // 2 - 16
    return b"version: 1\nunits: " + b"[" * half + b"]" * half + b"\n"


def deep_block() -> bytes:
    """Block mappings nested as deep as 1 MB of indentation allows."""
    lines, size, depth = ["version: 1", "units:"], 20, 1
    while size < SIZE:
        lines.append(" " * depth + "k:")
        size += depth + 3
        depth += 1
    return ("\n".join(lines) + "\n").encode()


def alias_bomb() -> bytes:
    """Each unit's description an anchor of two aliases of the one before: 2^13,000 strings
    once expanded."""
    lines = ["version: 1", "units:", "  a0.service: {listen: [1000/tcp], description: &d0 [x, x]}"]
    size, n = sum(len(line) + 1 for line in lines), 1
    while size < SIZE - 100:
        lines.append(f"  a{n}.service: {{listen: [{1000 + n % 50000}/tcp], "
                     f"description: &d{n} [*d{n - 1}, *d{n - 1}]}}")  # fmt: skip
        size += len(lines[-1]) + 1
        n += 1
    return ("\n".join(lines) + "\n").encode()


def alias_fanout() -> bytes:
    """One anchor of 1,000 claims, and 1 MB of units whose `listen` is an alias of it."""
    head = "version: 1\nbase: &b [" + ", ".join(f"{i}/tcp" for i in range(1000)) + "]\nunits:\n"
    body, n = [], 0
    size = len(head)
    while size < SIZE - 40:
        body.append(f"  u{n}.service: {{listen: *b}}\n")
        size += len(body[-1])
        n += 1
    return (head + "".join(body)).encode()


BUILDERS: dict[str, Callable[[], bytes]] = {
    "one-port": one_port,
    "one-port-mixed": one_port_mixed,
    "one-port-shared": one_port_shared,
    "ranges": ranges,
    "deep-flow": deep_flow,
    "deep-block": deep_block,
    "alias-bomb": alias_bomb,
    "alias-fanout": alias_fanout,
}
VALID = {"one-port-shared"}

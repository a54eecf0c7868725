"""nftables' expressions as the kernel dumps them: the netlink attribute stream, each
expression's attributes by name (linux/netfilter/nf_tables.h), and a value or verdict.
host/nftables.py reads the ruleset; the policy (natflow.py) runs what this decodes."""

import struct
from collections.abc import Iterator
from dataclasses import dataclass

_NLA_TYPE_MASK = 0x3FFF
_HEADER = struct.Struct("=HH").unpack_from
# Verdict codes (negative in the kernel's int32).
VERDICTS = {
    0: "drop",
    1: "accept",
    2: "stolen",
    3: "queue",
    4: "repeat",
    5: "stop",
    -1: "continue",
    -2: "break",
    -3: "jump",
    -4: "goto",
    -5: "return",
}

# Per expression: attribute number → (name, how to decode it). "u32"/"u8"/"u16" are
# big-endian numbers, "data" an NFTA_DATA nest (a value or a verdict), "str" a name.
_EXPR_ATTRS: dict[str, dict[int, tuple[str, str]]] = {
    "immediate": {1: ("dreg", "u32"), 2: ("data", "data")},
    "cmp": {1: ("sreg", "u32"), 2: ("op", "u32"), 3: ("data", "data")},
    "range": {1: ("sreg", "u32"), 2: ("op", "u32"), 3: ("from", "data"), 4: ("to", "data")},
    "lookup": {1: ("set", "str"), 2: ("sreg", "u32"), 3: ("dreg", "u32"), 5: ("flags", "u32")},
    "payload": {
        1: ("dreg", "u32"),
        2: ("base", "u32"),
        3: ("offset", "u32"),
        4: ("len", "u32"),
        5: ("sreg", "u32"),
    },
    "meta": {1: ("dreg", "u32"), 2: ("key", "u32"), 3: ("sreg", "u32")},
    "bitwise": {
        1: ("sreg", "u32"),
        2: ("dreg", "u32"),
        3: ("len", "u32"),
        4: ("mask", "data"),
        5: ("xor", "data"),
        6: ("op", "u32"),
        7: ("shift", "data"),
    },
    "fib": {1: ("dreg", "u32"), 2: ("result", "u32"), 3: ("flags", "u32")},
    "nat": {
        1: ("type", "u32"),
        2: ("family", "u32"),
        3: ("addr_min", "u32"),
        4: ("addr_max", "u32"),
        5: ("proto_min", "u32"),
        6: ("proto_max", "u32"),
        7: ("flags", "u32"),
    },
    "redir": {1: ("proto_min", "u32"), 2: ("proto_max", "u32"), 3: ("flags", "u32")},
    "masq": {1: ("flags", "u32")},
    "numgen": {
        1: ("dreg", "u32"),
        2: ("modulus", "u32"),
        3: ("type", "u32"),
        4: ("offset", "u32"),
    },
    "ct": {1: ("dreg", "u32"), 2: ("key", "u32"), 4: ("sreg", "u32")},
    "match": {1: ("name", "str"), 2: ("rev", "u32"), 3: ("info", "bytes")},
    "target": {1: ("name", "str"), 2: ("rev", "u32"), 3: ("info", "bytes")},
}


@dataclass(frozen=True, slots=True)
class Verdict:
    code: str  # accept, drop, jump, goto, return, continue, ...
    chain: str | None = None


@dataclass(frozen=True, slots=True)
class Expr:
    name: str
    attrs: dict[str, object]


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """A netlink attribute stream → {type: payload} (the last of a repeated type wins)."""
    return dict(iter_attrs(data))


def iter_attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset, end, header = 0, len(data), _HEADER
    while offset + 4 <= end:
        length, kind = header(data, offset)
        if length < 4:
            return
        yield kind & _NLA_TYPE_MASK, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def u32(raw: bytes) -> int:
    return int.from_bytes(raw[:4], "big")


def expr_of(raw: bytes) -> Expr:
    a = parse_attrs(raw)
    name = text(a.get(1, b""))
    layout = _EXPR_ATTRS.get(name, {})
    attrs: dict[str, object] = {}
    for kind, payload in iter_attrs(a.get(2, b"")):
        if kind not in layout:
            continue
        key, how = layout[kind]
        attrs[key] = _decode(payload, how)
    return Expr(name, attrs)


def _decode(payload: bytes, how: str) -> object:
    if how == "u32":
        return u32(payload)
    if how == "str":
        return text(payload)
    if how == "data":
        return data_of(payload)
    return payload


def data_of(nest: bytes) -> bytes | Verdict:
    """An NFTA_DATA nest: a value's bytes, or a verdict (with its chain for jump/goto)."""
    a = parse_attrs(nest)
    if 1 in a:
        return a[1]
    v = parse_attrs(a.get(2, b""))
    code = struct.unpack(">i", v[1][:4])[0] if 1 in v else 0
    return Verdict(VERDICTS.get(code, str(code)), text(v[2]) if 2 in v else None)

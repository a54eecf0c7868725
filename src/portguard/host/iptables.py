"""The legacy x_tables NAT table, where it is in use, in host/nftables.py's terms.

The legacy backend keeps no generation number and answers only a binary getsockopt
(IPT_SO_GET_ENTRIES) whose every match and target is its own struct; `iptables-legacy-save`,
which the iptables package ships wherever that backend can be in use, prints the same table
as text. It is run only when the kernel lists a legacy `nat` table (/proc/net/ip_tables_names,
per network namespace), and its rules are read into the expressions natflow.py runs: a port
match becomes a payload comparison, `--to-destination` an immediate and a `nat` expression,
and what is not translated stays an iptables `match` or `target` that natflow.py judges (or
names as unknown).
"""

import ipaddress
import shlex
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

from portguard.host.nftables import Chain, Expr, Rule, RulesetUnreadable, Verdict

_SAVE = {"ip": "iptables-legacy-save", "ip6": "ip6tables-legacy-save"}
_NAMES = {"ip": "/proc/net/ip_tables_names", "ip6": "/proc/net/ip6_tables_names"}
_HOOKS = {"PREROUTING": "prerouting", "OUTPUT": "output", "INPUT": "input",
          "POSTROUTING": "postrouting"}  # fmt: skip
_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}
_TIMEOUT_S = 5.0
# Legacy rules are numbered by their place in the chain: that is their "handle" here.
TABLE = "nat"


def in_use(family: str) -> bool:
    """Whether the legacy backend has a NAT table in this network namespace."""
    try:
        return "nat" in Path(_NAMES[family]).read_text().split()
    except OSError:
        return False


def read_nat(family: str) -> tuple[list[Chain], list[Rule]]:
    """The legacy NAT table's chains and rules; RulesetUnreadable when it cannot be read."""
    try:
        done = subprocess.run([_SAVE[family], "-t", "nat"], capture_output=True, text=True,
                              timeout=_TIMEOUT_S, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RulesetUnreadable(f"{_SAVE[family]}: {exc}") from None
    if done.returncode != 0:
        raise RulesetUnreadable(f"{_SAVE[family]}: {done.stderr.strip() or done.returncode}")
    return parse_save(done.stdout, family)


def parse_save(text: str, family: str) -> tuple[list[Chain], list[Rule]]:
    chains: list[Chain] = []
    rules: list[Rule] = []
    numbers: dict[str, int] = {}
    names = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    for line in text.splitlines():
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            hook = _HOOKS.get(name)
            chains.append(Chain(family, f"{TABLE} (legacy)", name, len(chains) + 1, hook, -100,
                                "nat" if hook else None,
                                policy.lower() if hook else None))  # fmt: skip
        elif line.startswith("-A "):
            words = shlex.split(line)
            chain = words[1]
            numbers[chain] = numbers.get(chain, 0) + 1
            exprs, comment = rule_exprs(words[2:], family, names)
            rules.append(Rule(family, f"{TABLE} (legacy)", chain, numbers[chain], tuple(exprs),
                              comment))  # fmt: skip
    return chains, rules


def rule_exprs(words: list[str], family: str, chains: set[str]) -> tuple[list[Expr], str | None]:
    """One rule's options as expressions, the comment apart; CHAINS: the table's chains (a
    `-j` to one is a jump, to anything else a target)."""
    exprs: list[Expr] = []
    comment = None
    module = ""
    i, negate = 0, False
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else ""
        if word == "!":
            negate, i = True, i + 1
            continue
        step = 2
        if word == "-m":
            module = value
            if value not in ("tcp", "udp", "comment", "multiport", "addrtype"):
                exprs.append(Expr("match", {"name": value, "rev": 0, "info": b""}))
        elif word in ("-p", "--protocol"):
            exprs += _cmp_meta(16, bytes([_PROTOS.get(value, 255)]), negate)
        elif word in ("-s", "--source", "-d", "--destination"):
            exprs += _address(value, family, word in ("-s", "--source"), negate)
        elif word in ("-i", "--in-interface", "-o", "--out-interface"):
            exprs += _interface(value, word in ("-i", "--in-interface"), negate)
        elif word in ("--dport", "--destination-port", "--sport", "--source-port"):
            exprs += _port(value, word in ("--dport", "--destination-port"), negate)
        elif word in ("--dports", "--destination-ports", "--sports", "--source-ports"):
            exprs.append(_multiport(value, word in ("--dports", "--destination-ports"), negate))
        elif word == "--dst-type" and module == "addrtype":
            local = value == "LOCAL"
            exprs += _fib_local(negate) if local else [_unknown("addrtype --dst-type " + value)]
        elif word in ("--limit-iface-in", "--syn"):
            exprs.append(Expr("match", {"name": "statistic", "rev": 0, "info": b""}))  # some
            step = 1
        elif word == "--tcp-flags":
            exprs.append(Expr("match", {"name": "statistic", "rev": 0, "info": b""}))  # some
            step = 3
        elif word == "--comment":
            comment = value
        elif word in ("-j", "-g", "--jump", "--goto"):
            exprs += _target(value, words[i + 2 :], goto=word in ("-g", "--goto"), chains=chains)
            break
        elif word.startswith("-") and module not in ("tcp", "udp", "comment", "multiport",
                                                     "addrtype"):  # fmt: skip
            step = 2  # an option of a match kept as a `match`: its share is that match's
        negate = False
        i += step
    return exprs, comment


def _cmp_meta(key: int, data: bytes, negate: bool) -> list[Expr]:
    return [Expr("meta", {"key": key, "dreg": 1}),
            Expr("cmp", {"sreg": 1, "op": int(negate), "data": data})]  # fmt: skip


def _address(text: str, family: str, source: bool, negate: bool) -> list[Expr]:
    network = ipaddress.ip_network(text, strict=False)
    size = 4 if family == "ip" else 16
    offset = (12 if source else 16) if family == "ip" else (8 if source else 24)
    mask = network.netmask.packed
    return [Expr("payload", {"dreg": 1, "base": 1, "offset": offset, "len": size}),
            Expr("bitwise", {"sreg": 1, "dreg": 1, "len": size, "mask": mask,
                             "xor": bytes(size)}),
            Expr("cmp", {"sreg": 1, "op": int(negate),
                         "data": network.network_address.packed})]  # fmt: skip


def _interface(name: str, incoming: bool, negate: bool) -> list[Expr]:
    data = name[:-1].encode() if name.endswith("+") else name.encode().ljust(16, b"\0")
    return _cmp_meta(6 if incoming else 7, data, negate)


def _port(text: str, destination: bool, negate: bool) -> list[Expr]:
    low, colon, high = text.partition(":")
    first = int(low or 0)
    last = int(high or 65535) if colon else first
    load = Expr("payload", {"dreg": 1, "base": 2, "offset": 2 if destination else 0, "len": 2})
    if first == last:
        return [load, Expr("cmp", {"sreg": 1, "op": int(negate),
                                   "data": struct.pack(">H", first)})]  # fmt: skip
    return [load, Expr("range", {"sreg": 1, "op": int(negate), "from": struct.pack(">H", first),
                                 "to": struct.pack(">H", last)})]  # fmt: skip


def _multiport(text: str, destination: bool, negate: bool) -> Expr:
    """xt_multiport_v1, packed as the kernel keeps it, for xtables.ports to read."""
    ports: list[int] = []
    flags: list[int] = []
    for part in text.split(","):
        low, colon, high = part.partition(":")
        ports += [int(low), int(high)] if colon else [int(low)]
        flags += [1, 0] if colon else [0]
    count = min(len(ports), 15)
    ports, flags = (ports + [0] * 15)[:15], (flags + [0] * 15)[:15]
    info = bytes([1 if destination else 0, count]) + struct.pack("=15H", *ports)
    info += bytes(flags) + bytes([int(negate)])
    return Expr("match", {"name": "multiport", "rev": 1, "info": info})


def _fib_local(negate: bool) -> list[Expr]:
    return [Expr("fib", {"dreg": 1, "result": 3, "flags": 2}),
            Expr("cmp", {"sreg": 1, "op": int(negate), "data": struct.pack("=I", 2)})]  # fmt: skip


def _target(name: str, options: list[str], *, goto: bool, chains: set[str]) -> list[Expr]:
    settings = dict(_pairs(options))
    if name in ("ACCEPT", "DROP", "RETURN"):
        return [Expr("immediate", {"dreg": 0, "data": Verdict(name.lower())})]
    if name == "DNAT" and "--to-destination" in settings:
        return _dnat(settings["--to-destination"])
    if name == "REDIRECT":
        port = settings.get("--to-ports", "").split("-")[0].split(":")[0]
        if not port:
            return [Expr("redir", {})]
        return [Expr("immediate", {"dreg": 2, "data": struct.pack(">H", int(port))}),
                Expr("redir", {"proto_min": 2})]  # fmt: skip
    if name in chains:
        return [Expr("immediate", {"dreg": 0, "data": Verdict("goto" if goto else "jump", name)})]
    return [Expr("target", {"name": name, "rev": 0, "info": b""})]


def _dnat(to: str) -> list[Expr]:
    host, port = to, ""
    if to.startswith("["):
        host, _, rest = to[1:].partition("]")
        port = rest.lstrip(":")
    elif to.count(":") == 1:
        host, port = to.split(":")
    exprs: list[Expr] = []
    attrs: dict[str, object] = {"type": 1}
    if host:
        packed = ipaddress.ip_address(host.split("-")[0]).packed
        exprs.append(Expr("immediate", {"dreg": 1, "data": packed}))
        attrs["addr_min"] = 1
    if port:
        number = struct.pack(">H", int(port.split("-")[0]))
        exprs.append(Expr("immediate", {"dreg": 2, "data": number}))
        attrs["proto_min"] = 2
    return [*exprs, Expr("nat", attrs)]


def _pairs(words: list[str]) -> Iterator[tuple[str, str]]:
    for i, word in enumerate(words):
        if word.startswith("--"):
            yield word, words[i + 1] if i + 1 < len(words) else ""


def _unknown(what: str) -> Expr:
    return Expr(what, {})

"""Which of a unit's claims NAT takes, and whose rule does it: pure (DESIGN rule 5).

Each address family a claim covers is judged on its own: it is taken when every address of
that family the claim covers (global and site scope; a loopback claim by the output path) has
every packet another host sends to the port sent elsewhere (natflow.py). A claim is
`redirected` when a family is; `partly` when some of that traffic is; what could not be
judged is a gap, never a verdict.
"""

import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from portguard.host.addresses import Address
from portguard.host.ipvs import VirtualService
from portguard.host.nftables import Rule, Ruleset
from portguard.host.xtables import comment as xt_comment
from portguard.policy.natflow import Redirect, flow
from portguard.policy.natmatch import Packets
from portguard.registry.claims import Claim, Proto

_PROTO_NUMBERS = {Proto.TCP: 6, Proto.UDP: 17}
_FAMILY_NAMES = {"ip": "IPv4", "ip6": "IPv6"}
# Ports judged per claim at most: a pool larger than this is judged by its first ports.
_MAX_PORTS = 256
_KUBE_CHAIN = re.compile(r"^(?:external|service)-[A-Z0-9]+-([^/]+)/([^/]+)/")
_KUBE_COMMENT = re.compile(r"^([a-z0-9.-]+)/([a-z0-9.-]+)(?::\S*)?$")
_CNI_ID = re.compile(r'id: "([0-9a-f]{12,})"')
_FIREWALLD_CHAIN = re.compile(r"^(?:nat_)?PRE_(.+?)_(?:allow|pre|post|deny|log)$")


@dataclass(frozen=True, slots=True)
class Taker:
    """Who takes a port's traffic, in the words the journal and `why` use."""

    kind: str  # kubernetes-service, hostport, firewalld, libvirt, docker, nat-rule
    name: str  # "Kubernetes Service default/web", "firewalld zone public", ...
    to: str  # where the traffic goes: "10.244.1.5:80", "this host's port 9000"
    family: str
    table: str
    chain: str
    handle: int
    remedy: str

    @property
    def location(self) -> str:
        return f"{self.family} {self.table} {self.chain} (handle {self.handle})"


@dataclass(frozen=True, slots=True)
class Taken:
    claim: Claim
    port: int
    family: str  # "IPv4" or "IPv6"
    certain: bool
    taker: Taker


@dataclass(slots=True)
class Judged:
    taken: list[Taken] = field(default_factory=list)  # certain: the verdict `redirected`
    partly: list[Taken] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    # Per protocol, from claims on every address that nothing took: the ports that may fare
    # otherwise; every other port is taken by nothing either (natmatch.PortWitness). A
    # protocol some judgement could not generalize is absent.
    others_free: dict[Proto, list[tuple[int, int]]] = field(default_factory=dict)
    not_general: set[Proto] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Host:
    addresses: Sequence[Address]
    interfaces: tuple[tuple[int, str], ...]
    virtual: tuple[VirtualService, ...] = ()  # IPVS


def judge(
    ruleset: Ruleset,
    claims: Iterable[Claim],
    host: Host,
    *,
    unit: str,
    own: Iterable[tuple[Proto, int]] = (),
) -> Judged:
    """CLAIMS against RULESET; OWN: the (proto, port) of the unit's and its `via` units' claims,
    where a redirect is the unit's own plumbing."""
    mine = set(own)
    local = {a.packed for a in host.addresses}
    judged = Judged()
    for claim in claims:
        for port in list(claim.ports)[:_MAX_PORTS]:
            for family, targets in _covered(claim, host):
                _judge_family(
                    ruleset, claim, port, family, targets, host, unit, mine, local, judged
                )
    return judged


def _judge_family(  # noqa: PLR0917
    ruleset: Ruleset, claim: Claim, port: int, family: str, targets: list[tuple[bytes, str]],
    host: Host, unit: str, mine: set[tuple[Proto, int]], local: set[bytes], judged: Judged,
) -> None:  # fmt: skip
    certain: list[Redirect | VirtualService] = []
    partial: list[Redirect | VirtualService] = []
    proto = _PROTO_NUMBERS[claim.proto]
    for address, hook in targets:
        packets = Packets(family, hook, address, _PROTO_NUMBERS[claim.proto], port, host.interfaces)

        def own(r: Redirect, address: bytes = address) -> bool:
            to_port = r.port if r.port is not None else port
            here = r.kind == "redirect" or r.address in local or r.address == address
            return here and (claim.proto, to_port) in mine

        found = flow(ruleset, packets, own)
        judged.gaps += [g for g in found.unknown if g not in judged.gaps]
        _generalize(judged, claim, found.avoid, host, proto)
        # What NAT leaves for this host, IPVS takes at LOCAL_IN, before any socket sees it.
        virtual = [
            v for v in host.virtual if (v.proto, v.address, v.port) == (proto, address, port)
        ]
        if found.certain is not None:
            certain.append(found.certain)
        elif virtual:
            certain.append(virtual[0])
        partial += found.partial
    name = _FAMILY_NAMES[family]
    if certain and len(certain) == len(targets):
        judged.taken.append(Taken(claim, port, name, True, _taker(certain[0], claim, port, unit)))
    elif certain or partial:
        first = (certain or partial)[0]
        judged.partly.append(Taken(claim, port, name, False, _taker(first, claim, port, unit)))
    fwm = "IPVS firewall-mark services (a mark set by a rule, not an address)"
    if any(v.mark is not None for v in host.virtual) and fwm not in judged.gaps:
        judged.gaps.append(fwm)


def _generalize(
    judged: Judged, claim: Claim, avoid: list[tuple[int, int]] | None, host: Host, proto: int
) -> None:
    """What this judgement says of other ports: see Judged.others_free."""
    if claim.address is not None or avoid is None or claim.proto in judged.not_general:
        if claim.address is None:
            judged.not_general.add(claim.proto)
            judged.others_free.pop(claim.proto, None)
        return
    virtual = [(v.port, v.port) for v in host.virtual if v.proto in (proto, 0)]
    if any(v.mark is not None for v in host.virtual):
        judged.not_general.add(claim.proto)  # a firewall mark may single out any port
        return
    judged.others_free.setdefault(claim.proto, []).extend(avoid + virtual)


def _taker(found: "Redirect | VirtualService", claim: Claim, port: int, unit: str) -> Taker:
    if isinstance(found, Redirect):
        return taker(found, claim, port, unit)
    host = socket.inet_ntop(socket.AF_INET if len(found.address) == 4 else socket.AF_INET6,
                            found.address)  # fmt: skip
    reals = ", ".join(_endpoint_text(a, p) for a, p, _fwd in found.reals[:3]) or "no real server"
    more = f" and {len(found.reals) - 3} more" if len(found.reals) > 3 else ""
    proto = str(claim.proto)
    flag = "-t" if proto == "tcp" else "-u"
    return Taker(
        "ipvs", f"an IPVS virtual service on {_endpoint_text(found.address, port)}",
        f"{reals}{more}", "ipvs", "ip_vs", proto, port,
        f"'ipvsadm -Ln {flag} {host if len(found.address) == 4 else f'[{host}]'}:{port}' shows "
        f"it; if kube-proxy (IPVS mode) made it, it is a Service's NodePort: 'kubectl get svc "
        f"-A | grep :{port}/' names it; change its nodePort, or move {unit}'s claim out of the "
        "node-port range",
    )  # fmt: skip


def _endpoint_text(address: bytes, port: int) -> str:
    family = socket.AF_INET if len(address) == 4 else socket.AF_INET6
    host = socket.inet_ntop(family, address)
    return f"{host}:{port}" if family == socket.AF_INET else f"[{host}]:{port}"


def _covered(claim: Claim, host: Host) -> list[tuple[str, list[tuple[bytes, str]]]]:
    """Per family the claim covers: each address judged and the hook its clients pass."""
    families = []
    address = claim.address
    if address is None or address.is_unspecified:
        v4 = address is None or address.version == 4 or not claim.v6only
        v6 = address is None or address.version == 6
        for family, af, wanted in (("ip", socket.AF_INET, v4), ("ip6", socket.AF_INET6, v6)):
            if wanted:
                remote = [(a.packed, "prerouting") for a in host.addresses
                          if a.family == af and a.remote]  # fmt: skip
                if remote:
                    families.append((family, remote))
        return families
    mapped = address.ipv4_mapped if address.version == 6 else None
    target = mapped or address
    family = "ip" if target.version == 4 else "ip6"
    hook = "output" if target.is_loopback else "prerouting"
    return [(family, [(target.packed, hook)])]


def taker(redirect: Redirect, claim: Claim, port: int, unit: str) -> Taker:
    """The redirect's owner at its own layer, and the fix there (DESIGN rule 3)."""
    rule = redirect.rule
    to = _destination(redirect, port)
    proto = str(claim.proto)
    chains = [r.chain for r in (*redirect.path, rule)] + list(redirect.keys)
    comments = [c for c in (_comment_of(r) for r in (*redirect.path, rule)) if c]
    where = (rule.family, rule.table, rule.chain, rule.handle)
    move = f"or move {unit}'s claim to another port"
    for chain in chains:
        if found := _KUBE_CHAIN.match(chain):
            return _kube(found.group(1), found.group(2), port, to, where, unit)
    if "KUBE-NODEPORTS" in chains or any(c.startswith("KUBE-") for c in chains):
        for text in comments:
            if found := _KUBE_COMMENT.match(text):
                return _kube(found.group(1), found.group(2), port, to, where, unit)
    if any(c.startswith("CNI-") for c in chains) or rule.table == "cni_hostport":
        container = next((m.group(1) for c in comments if (m := _CNI_ID.search(c))), None)
        who = f"container {container[:12]}" if container else "a container"
        return Taker(
            "hostport", f"a pod's hostPort {port} ({who})", to, *where,
            f"the pod's hostPort {port}/{proto} takes it: 'crictl ps --id {container or ''}' "
            f"and 'crictl inspectp' name the pod; change the pod's hostPort, {move}",
        )  # fmt: skip
    if rule.table == "firewalld" or any(_FIREWALLD_CHAIN.match(c) for c in chains):
        zone = next((m.group(1) for c in chains if (m := _FIREWALLD_CHAIN.match(c))), "?")
        forward = f"port={port}:proto={proto}" + _firewalld_to(redirect, port)
        return Taker(
            "firewalld", f"firewalld zone {zone}'s forward port", to, *where,
            f"'firewall-cmd --zone={zone} --remove-forward-port={forward}', and again with "
            f"--permanent; {move}",
        )  # fmt: skip
    if "libvirt" in rule.table.lower() or any(c.startswith("LIBVIRT") for c in chains):
        return Taker("libvirt", "a libvirt network's rule", to, *where,
                     f"'virsh net-list' and 'virsh net-dumpxml NET' show it; change the "
                     f"network's forwarding, {move}")  # fmt: skip
    if "DOCKER" in chains or "docker" in rule.table.lower():
        return Taker("docker", "a Docker published port", to, *where,
                     f"'docker ps --filter publish={port}' names the container; publish it on "
                     f"another port, {move}")  # fmt: skip
    return _plain_rule(rule, to, move)


def _plain_rule(rule: Rule, to: str, move: str) -> Taker:
    """A rule no tool owns that we know of: where it is, and how to see it."""
    six = "" if rule.family == "ip" else "6"
    where = (rule.family, rule.table, rule.chain, rule.handle)
    if rule.table.endswith("(legacy)"):
        text = f"an iptables-legacy rule in table nat chain {rule.chain} (rule {rule.handle})"
        show = f"'ip{six}tables-legacy -t nat -S {rule.chain}'"
    elif rule.table in ("nat", "filter", "mangle") and rule.chain.isupper():
        text = f"an iptables rule in table {rule.family} nat chain {rule.chain} " \
               f"(handle {rule.handle})"  # fmt: skip
        show = f"'ip{six}tables -t nat -S {rule.chain}'"
    else:
        text = f"an nftables rule in table {rule.family} {rule.table} chain {rule.chain} " \
               f"(handle {rule.handle})"  # fmt: skip
        show = f"'nft -a list chain {rule.family} {rule.table} {rule.chain}'"
    return Taker("nat-rule", text, to, *where,
                 f"{show} shows it; remove that rule where it is written (nftables.conf, "
                 f"iptables' saved rules, or the tool that made it), {move}")  # fmt: skip


def _kube(ns: str, name: str, port: int, to: str, where: tuple[str, str, str, int],  # noqa: PLR0917
          unit: str) -> Taker:  # fmt: skip
    return Taker(
        "kubernetes-service",
        f"Kubernetes Service {ns}/{name} (NodePort {port})",
        to,
        *where,
        f"'kubectl -n {ns} get svc {name}' shows it; change that Service's nodePort, or move "
        f"{unit}'s claim out of the node-port range (30000-32767 unless "
        "--service-node-port-range says otherwise)",
    )


def _destination(redirect: Redirect, port: int) -> str:
    to_port = redirect.port if redirect.port is not None else port
    if redirect.kind == "redirect":
        return f"this host's port {to_port}"
    if redirect.address is None:
        return f"port {to_port} elsewhere"
    host = socket.inet_ntop(socket.AF_INET if len(redirect.address) == 4 else socket.AF_INET6,
                            redirect.address)  # fmt: skip
    return f"{host}:{to_port}" if ":" not in host else f"[{host}]:{to_port}"


def _firewalld_to(redirect: Redirect, port: int) -> str:
    parts = ""
    if redirect.port is not None and redirect.port != port:
        parts += f":toport={redirect.port}"
    if redirect.address is not None:
        parts += ":toaddr=" + _destination(redirect, port).rsplit(":", 1)[0].strip("[]")
    return parts


def _comment_of(rule: Rule) -> str | None:
    if rule.comment:
        return rule.comment
    for expr in rule.exprs:
        if expr.name == "match" and expr.attrs.get("name") == "comment":
            info = expr.attrs.get("info")
            if isinstance(info, bytes):
                return xt_comment(info)
    return None


def taken_lines(taken: Sequence[Taken]) -> list[str]:
    """`init`'s comments on what NAT takes: one line a port, but kube-proxy's NodePorts as
    one line (their range and count): a Kubernetes node has hundreds."""
    lines: list[str] = []
    nodeports = sorted({t.port for t in taken if t.taker.kind == "kubernetes-service"})
    if nodeports:
        lines.append(
            f"{len(nodeports)} Kubernetes NodePort{'s' * (len(nodeports) != 1)} "
            f"({nodeports[0]}-{nodeports[-1]}), redirected by kube-proxy's rules: keep claims "
            "out of the node-port range (30000-32767 unless --service-node-port-range says "
            "otherwise)"
        )
    seen: set[tuple[int, str]] = set()
    for t in taken:
        if t.taker.kind == "kubernetes-service" or (t.port, str(t.claim.proto)) in seen:
            continue
        seen.add((t.port, str(t.claim.proto)))
        lines.append(f"{t.port}/{t.claim.proto}: {t.family} traffic goes to {t.taker.to} "
                     f"by {t.taker.name} ({t.taker.location})")  # fmt: skip
    return lines

"""NAT redirects on this host, for `check`, `why`, `audit`, `init` and `wait`: the kernel's
ruleset and addresses read once, judged by policy/redirects.py, and remembered for the free
path (freepath/nat.py) while the ruleset's generation stands."""

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from portguard.freepath import nat
from portguard.host import iptables
from portguard.host.addresses import addresses, interfaces
from portguard.host.files import write_atomically
from portguard.host.ipvs import virtual_services
from portguard.host.nftables import Ruleset, RulesetUnreadable, read_ruleset
from portguard.policy.redirects import Host, Judged, Taken, judge
from portguard.policy.report import Report, Verdict
from portguard.registry.claims import Claim, Proto


def ruleset_here() -> Ruleset | str:
    """The NAT rules in force: nftables' (iptables-nft's among them) and, where the legacy
    backend has a NAT table, its rules too; or why they could not be read."""
    try:
        found = read_ruleset() if nat.nftables_in_use() else Ruleset(0, (), (), ())
    except RulesetUnreadable as exc:
        return f"the nftables ruleset ({exc.message})"
    chains, rules = list(found.chains), list(found.rules)
    for family in ("ip", "ip6"):
        if iptables.in_use(family):
            try:
                more_chains, more_rules = iptables.read_nat(family)
            except RulesetUnreadable as exc:
                return f"the legacy iptables NAT table ({exc.message})"
            chains += more_chains
            rules += more_rules
    return Ruleset(found.generation, tuple(chains), tuple(rules), found.sets)


def host_here() -> Host:
    return Host(addresses(), interfaces(), tuple(virtual_services()))


def look(
    claims: Iterable[Claim],
    *,
    unit: str,
    own: Iterable[tuple[Proto, int]] = (),
    ruleset: Ruleset | str | None = None,
    host: Host | None = None,
) -> Judged:
    """CLAIMS judged against this host's NAT rules now."""
    found = ruleset_here() if ruleset is None else ruleset
    if isinstance(found, str):
        return Judged(gaps=[found])
    return judge(found, claims, host or host_here(), unit=unit, own=own)


def has_nat(ruleset: Ruleset) -> bool:
    return any(c.type == "nat" and c.hook in ("prerouting", "output") for c in ruleset.chains)


def remember(ruleset: Ruleset | str, unit: str, key: bytes | None, judged: Judged) -> None:
    """Leave the free path its mark: nothing of UNIT's is taken at this generation."""
    if isinstance(ruleset, str) or os.geteuid() != 0 or judged.taken or judged.partly:
        return
    if any(iptables.in_use(f) for f in ("ip", "ip6")):
        return  # the legacy table has no generation number: every check reads it
    state = nat.ruleset_state()
    if state is None or state.split()[1] != str(ruleset.generation):
        return  # changed since it was read: the next check reads it again
    try:
        os.makedirs(Path(nat.marker()).parent, mode=0o755, exist_ok=True)
        if not has_nat(ruleset):
            write_atomically(Path(nat.marker()), f"{state} none")
            return
        if key is not None and not judged.gaps:
            write_atomically(Path(nat.marker(unit)), f"{state} {key.hex()}")
        if judged.others_free and not judged.gaps:
            lines = [state] + [
                f"{proto} " + " ".join(f"{lo}-{hi}" for lo, hi in _merged(avoid))
                for proto, avoid in sorted(judged.others_free.items())
            ]
            write_atomically(Path(nat.marker(nat.PORTS)), "\n".join(lines) + "\n")
    except OSError:
        pass  # only speed is lost


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def taken_here() -> tuple[list[str], list[str]]:
    """For `init`: what NAT takes of every port its rules name, as comment lines, and what
    could not be judged. Each port is judged as a claim on every address, TCP and UDP."""
    from portguard.policy.natports import candidate_ports  # noqa: PLC0415
    from portguard.policy.redirects import taken_lines  # noqa: PLC0415

    ruleset = ruleset_here()
    if isinstance(ruleset, str):
        return [], [f"what NAT takes: {ruleset}"]
    if not has_nat(ruleset):
        return [], []
    host = host_here()
    claims = [Claim(proto, p, p) for p in sorted(candidate_ports(ruleset)) for proto in Proto]
    judged = judge(ruleset, claims, host, unit="its service")
    return taken_lines(judged.taken), [f"what NAT takes: {g}" for g in judged.gaps]


def first_this_boot(unit: str, what: str = "unjudged") -> bool:
    """Whether WHAT of UNIT (its unjudged NAT, by default) is news since boot (/run is emptied
    at every boot); a guard that may not write there says it every time."""
    path = Path(f"{nat.marker(unit)}.{what}")
    try:
        os.makedirs(path.parent, mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    except OSError:
        return True
    os.close(fd)
    return True


def verdict(report: Report, judged: Judged) -> Report:
    """A free (or released) REPORT turned `redirected` or `partly-redirected` by JUDGED."""
    if judged.taken:
        return _report(report, judged.taken[0], Verdict.REDIRECTED, judged)
    if judged.partly:
        return _report(report, judged.partly[0], Verdict.PARTLY_REDIRECTED, judged)
    if judged.gaps:
        gaps = tuple(report.gaps) + tuple(f"whether NAT takes the port: {g}" for g in judged.gaps)
        return replace(report, gaps=gaps)
    return report


def summary(taken: Taken) -> str:
    """'nothing listens on 30080/tcp here, but IPv4 traffic to it goes to … by …'."""
    t = taken.taker
    how = "all" if taken.certain else "some"
    return (
        f"{taken.port}/{taken.claim.proto} is free for bind(), but {how} {taken.family} "
        f"traffic to it goes to {t.to}: {t.name} ({t.location})"
    )


def _report(report: Report, taken: Taken, verdict: Verdict, judged: Judged) -> Report:
    return replace(
        report,
        verdict=verdict,
        summary=f"{report.unit}: {summary(taken)}",
        remedy=taken.taker.remedy,
        port=taken.port,
        proto=str(taken.claim.proto),
        address=None if taken.claim.address is None else str(taken.claim.address),
        state=None,
        owner=None,
        taker=taken.taker,
        gaps=tuple(report.gaps) + tuple(judged.gaps),
    )

"""portguard against the kernel, case by random case, in a network namespace of its own.

Run as root inside a fresh network namespace (tests/kernel/test_differential.py starts it
with `unshare --net`). For each seeded case the oracle (tests/kernel/oracle.py, a separate
process with its own socket code) builds foreign sockets on one port, and then

- `check`: portguard decides the claim -- in-process for most cases (the registry loaded and
  linted, the real probe and sock_diag census; no systemd here, so unit details come from a
  stand-in that says the bus is absent), through the real `portguard check` command for every
  CLI_EVERY-th case -- and the oracle tries the service's own bind() and listen();
- `lint`: two claims as two services, bound and listened in both orders, against what lint
  says of the pair.

Prints one JSON report: the seed, the count of cases per dimension, and each disagreement
with a minimal reproducer (the case as data and as a registry).
"""

import argparse
import errno
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from portguard.commands import check as check_command
from portguard.commands.attribution import here
from portguard.commands.trusted import load_registry
from portguard.errors import ConfigError
from portguard.host import probe, sockets
from portguard.host.processes import wait_for_exit
from portguard.host.units import FactsUnavailable
from portguard.policy import attribute as attribution
from portguard.policy.guard import Effects, check
from portguard.registry.entries import RegistrySource
from portguard.registry.lint import check_registry
from portguard.registry.model import load

HERE = Path(__file__).resolve().parent
UNIT = "diff.service"
PRESENT_V4 = ("127.0.0.1", "192.0.2.1")  # 192.0.2.1 is added to lo: not a loopback address
PRESENT_V6 = ("::1", "2001:db8::1")
MAPPED = ("::ffff:127.0.0.1", "::ffff:192.0.2.1")
WILDCARDS = ("0.0.0.0", "::")
ABSENT = ("198.51.100.7", "2001:db8::99")
FIRST_PORT = 20000  # below the namespace's ephemeral range (40000-60999)
QUIET_PORT = 30000  # nobody else binds from here to 34999
SHRINK_PORT = 37000  # retries of a disagreeing case with fewer sockets
POOL_PORT = 61000  # pools, 8 ports a case at most, above the namespace's ephemeral range
POOL_LIVE_KINDS = {
    "tcp": ("bound", "listen", "accepted", "outbound"),
    "udp": ("bound", "connected"),
}
FIRST_PRIVILEGED = 600
NOBODY = 65534
TCP_KINDS = ("bound", "listen", "accepted", "timewait-server", "outbound", "timewait-client")
UDP_KINDS = ("bound", "connected")
TIME_WAIT_KINDS = ("timewait-server", "timewait-client")
CLIENT_KINDS = ("outbound", "timewait-client")

# What `check` must answer for the errno the service's own bind()/listen() got.
EXPECTED = {0: 0, errno.EADDRNOTAVAIL: 68, errno.EACCES: 77, errno.EPERM: 77}


def setup_namespace() -> None:
    for command in (
        "ip link set lo up",
        "ip addr add 192.0.2.1/32 dev lo",
        "ip -6 addr add 2001:db8::1/128 dev lo nodad",
    ):
        subprocess.run(command.split(), check=True)
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("40000 60999")


class OracleProcess:
    def __init__(self) -> None:
        self.child = subprocess.Popen(
            [sys.executable, str(HERE / "oracle.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.child.stdin and self.child.stdout
        self.child.stdin.write(json.dumps(request) + "\n")
        self.child.stdin.flush()
        answer: dict[str, Any] = json.loads(self.child.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.child.stdin
        self.child.stdin.close()
        self.child.wait(timeout=10)


# --- cases ------------------------------------------------------------------------------------


def random_claim(rng: random.Random, *, lint: bool = False) -> dict[str, Any]:
    proto = rng.choice(("tcp", "tcp", "udp"))
    pool: list[str | None] = [None, *WILDCARDS, *PRESENT_V4, *PRESENT_V6, *MAPPED]
    if not lint:
        pool += [*ABSENT]
    address = rng.choice(pool)
    v6 = address is not None and ":" in address
    v6only = v6 and rng.random() < 0.4
    if lint and address in MAPPED:
        v6only = False
    return {
        "proto": proto,
        "address": address,
        "v6only": v6only,
        "reuseaddr": rng.random() < 0.7,
        "reuseport": rng.random() < 0.3,
        "freebind": not lint and rng.random() < 0.1,
        "uid": rng.choice((0, 0, 0, NOBODY)),
    }


def random_foreign(rng: random.Random, proto: str, clients: int) -> dict[str, Any]:
    kinds = TCP_KINDS if proto == "tcp" else UDP_KINDS
    if clients:
        kinds = tuple(k for k in kinds if k not in CLIENT_KINDS)
    kind = rng.choice(kinds)
    spec: dict[str, Any] = {
        "proto": proto,
        "kind": kind,
        "reuseaddr": rng.random() < 0.5,
        "reuseport": rng.random() < 0.3,
        "uid": rng.choice((0, NOBODY)),
    }
    if kind in CLIENT_KINDS:
        dest = rng.choice((*PRESENT_V4, *PRESENT_V6, *MAPPED))
        spec.update(address="::" if ":" in dest else "0.0.0.0", v6only=False, dest=dest)
        return spec
    address = rng.choice((*WILDCARDS, *PRESENT_V4, *PRESENT_V6, *MAPPED))
    v6only = ":" in address and address not in MAPPED and rng.random() < 0.4
    spec.update(address=address, v6only=v6only, dest=_reachable(rng, address, v6only))
    return spec


def _reachable(rng: random.Random, address: str, v6only: bool) -> str:
    """An address a client connects to that reaches a socket bound to ADDRESS."""
    if address == "0.0.0.0":
        return rng.choice(PRESENT_V4)
    if address == "::":
        return rng.choice(PRESENT_V6 if v6only else (*PRESENT_V4, *PRESENT_V6, *MAPPED))
    return address.removeprefix("::ffff:") if address in MAPPED else address


def random_case(rng: random.Random, index: int) -> dict[str, Any]:
    claim = random_claim(rng)
    privileged = claim["uid"] == NOBODY and index % 7 == 0
    port = FIRST_PRIVILEGED + index // 7 if privileged else FIRST_PORT + index
    foreign: list[dict[str, Any]] = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        proto = claim["proto"] if rng.random() < 0.9 else rng.choice(("tcp", "udp"))
        clients = sum(f["kind"] in CLIENT_KINDS for f in foreign)
        foreign.append(random_foreign(rng, proto, clients))
    return {"index": index, "port": port, "claim": claim, "foreign": foreign}


def registry_text(claims: list[tuple[str, dict[str, Any]]], port: int | str,
                  wait: str = "0s") -> str:  # fmt: skip
    lines = ["version: 1", "units:"]
    for unit, claim in claims:
        address = claim["address"]
        where = "" if address is None else (f"[{address}]:" if ":" in address else f"{address}:")
        lines += [
            f"  {unit}:",
            f"    wait: {wait}",
            "    listen:",
            f'      - port: "{where}{port}/{claim["proto"]}"',
        ]
        if "min_free" in claim:
            lines += ["        pool: true", f"        min-free: {claim['min_free']}"]
        for option in ("v6only", "reuseaddr", "reuseport", "freebind"):
            lines.append(f"        {option}: {str(claim.get(option, False)).lower()}")
    return "\n".join(lines) + "\n"


# --- check ------------------------------------------------------------------------------------


def no_bus(names: list[str], timeout: float) -> dict[str, Any]:
    """A stand-in for systemd's D-Bus, absent in this namespace (the real one is tried by the
    CLI cases and fails just the same, only slower)."""
    raise FactsUnavailable("no systemd in the differential namespace")


def in_process_check(registry: Path, claim: dict[str, Any]) -> dict[str, Any]:
    try:
        loaded = load_registry(registry)
    except ConfigError as exc:
        return {"exit": 78, "summary": exc.message, "named": False}
    guarded = check_command.guarded_for(loaded, UNIT)
    assert guarded is not None
    binder = probe.Binder((claim["uid"], False) if claim["uid"] else None)
    context = replace(here(self_cgroup=None, facts_timeout=0.2), facts=no_bus,
                      inode_search_seconds=0.0)  # fmt: skip
    effects = Effects(
        lambda claims: probe.probe(claims, binder),
        sockets.census,
        lambda occupants, also, timeout: attribution.attribute(occupants, context, also),
        wait_for_exit,
        time.monotonic,
        lambda claim: probe.probe_pool(claim, binder),
        sockets.listening_census,  # the listeners first, as the guard looks (issue 29)
    )
    report = check(replace(guarded, uid=claim["uid"]), effects)
    return {
        "exit": int(report.exit_code),
        "summary": report.line(),
        "named": report.state is not None,
    }


def cli_check(registry: Path, claim: dict[str, Any]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "portguard",
        "check",
        UNIT,
        "--registry",
        str(registry),
        "--json",
    ]
    if claim["uid"]:
        command += ["--user", str(claim["uid"]), "--caps", "none"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    data = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return {
        "exit": done.returncode,
        "summary": done.stderr.strip() or data.get("summary", ""),
        "named": bool(data.get("state")),
    }


def expected_exit(alone: int, together: int, quiet: int) -> int:
    """What `check` must say: from the service's errno with every foreign socket present
    (TOGETHER), with the live ones only, before any TIME-WAIT existed (ALONE), and as root on
    a port nobody uses (QUIET: a claim the kernel refuses to everyone is lint's to refuse)."""
    if quiet not in (0, errno.EADDRNOTAVAIL):
        return 78
    if together == errno.EADDRINUSE:
        return 69 if alone == errno.EADDRINUSE else 75
    return EXPECTED.get(together, 78)


def run_check_case(
    oracle: OracleProcess, case: dict[str, Any], workdir: Path, cli: bool
) -> dict[str, Any]:
    port, claim = case["port"], case["claim"]
    quiet = oracle.ask(
        op="service", port=QUIET_PORT + case["index"] % 5000, claim={**claim, "uid": 0}
    )
    live = [f for f in case["foreign"] if f["kind"] not in TIME_WAIT_KINDS]
    waiting = [f for f in case["foreign"] if f["kind"] in TIME_WAIT_KINDS]
    made = oracle.ask(op="live", port=port, sockets=live)["made"]
    alone = oracle.ask(op="service", port=port, claim=claim)["errno"]
    made += oracle.ask(op="timewait", port=port, sockets=waiting)["made"]
    registry = workdir / f"case-{case['index']}.yaml"
    registry.write_text(registry_text([(UNIT, claim)], port))
    got = (cli_check if cli else in_process_check)(registry, claim)
    together = oracle.ask(op="service", port=port, claim=claim)["errno"]
    oracle.ask(op="clear")
    registry.unlink()
    want = expected_exit(alone, together, quiet["errno"])
    problems = []
    if got["exit"] != want:
        problems.append(f"check exit {got['exit']}, the kernel says {want} (errno {together})")
    # A blocker the census can see must be named, not "an unknown holder"; a TCP socket
    # bound without listen() is invisible to sock_diag before Linux 6.8.
    visible = any(m is True and not (f["kind"] == "bound" and f["proto"] == "tcp")
                  for f, m in zip(live + waiting, made, strict=True))  # fmt: skip
    if want in (69, 75) and visible and not got["named"]:
        problems.append("the blocker is in the socket table but was not named")
    return {
        "order": live + waiting,
        "made": made,
        "errno": together,
        "want": want,
        "got": got,
        "problems": problems,
    }


# --- pools (DESIGN rule 6) ---------------------------------------------------------------------


def random_pool_case(rng: random.Random, index: int) -> dict[str, Any]:
    """A pool of 1-8 ports at an address that is here, some of its ports held by others."""
    claim = random_claim(rng)
    while claim["address"] in ABSENT:
        claim = random_claim(rng)
    claim["freebind"] = False
    if claim["address"] in MAPPED:
        claim["v6only"] = False  # never bindable: lint's to refuse (the check cases cover it)
    size = rng.randint(1, 8)
    claim["min_free"] = rng.randint(1, size)
    first = POOL_PORT + 8 * index
    held: list[tuple[int, dict[str, Any]]] = []
    for port in range(first, first + size):
        for _ in range(rng.choice((0, 1, 1, 1, 2))):
            spec = random_foreign(rng, claim["proto"], 0)
            spec["kind"] = rng.choice(POOL_LIVE_KINDS[claim["proto"]])
            if spec["kind"] == "outbound":
                spec.update(address="::" if ":" in spec["dest"] else "0.0.0.0", v6only=False)
            held.append((port, spec))
    return {"index": index, "first": first, "last": first + size - 1, "claim": claim,
            "held": held}  # fmt: skip


def run_pool_case(
    oracle: OracleProcess, case: dict[str, Any], workdir: Path, cli: bool
) -> dict[str, Any]:
    """`check` fails exactly when the service could bind fewer than min-free of the pool's
    ports in every family: the oracle, holding what it binds, is the service."""
    claim, first, last = case["claim"], case["first"], case["last"]
    made = [oracle.ask(op="live", port=port, sockets=[spec])["made"][0]
            for port, spec in case["held"]]  # fmt: skip
    bound = oracle.ask(op="pool", first=first, last=last, claim=claim)["bound"]
    registry = workdir / f"pool-{case['index']}.yaml"
    registry.write_text(registry_text([(UNIT, claim)], f"{first}-{last}"))
    got = (cli_check if cli else in_process_check)(registry, claim)
    again = oracle.ask(op="pool", first=first, last=last, claim=claim)["bound"]
    oracle.ask(op="clear")
    registry.unlink()
    want = 0 if max(bound) >= claim["min_free"] else 69
    problems = []
    if bound != again:
        problems.append(f"the kernel changed its mind: {bound} then {again}")
    if got["exit"] != want:
        problems.append(f"check exit {got['exit']}, the kernel says {want} (bound {bound})")
    if want == 69 and "cannot serve" not in got["summary"]:
        problems.append(f"not an exhausted pool: {got['summary']}")
    return {"made": made, "bound": bound, "want": want, "got": got, "problems": problems}


def pool_cases(oracle: OracleProcess, rng: random.Random, *, count: int, cli_every: int,
               workdir: Path, counts: Counter[str]) -> list[dict[str, Any]]:  # fmt: skip
    disagreements = []
    for index in range(count):
        case = random_pool_case(rng, index)
        cli = index % cli_every == 0
        result = run_pool_case(oracle, case, workdir, cli)
        size = case["last"] - case["first"] + 1
        counts.update([
            "pool", "pool.cli" if cli else "pool.in-process", f"pool.verdict={result['want']}",
            f"pool.proto={case['claim']['proto']}",
            "pool.some-held" if case["held"] else "pool.none-held",
            "pool.partly-held" if 0 < len({p for p, _ in case["held"]}) < size else "pool.other",
            *(f"pool.holder={spec['proto']}-{spec['kind']}" for _, spec in case["held"]),
        ])  # fmt: skip
        if result["problems"]:
            registry = registry_text([(UNIT, case["claim"])], f"{case['first']}-{case['last']}")
            disagreements.append({"case": case, "result": result, "registry": registry})
    return disagreements


# --- lint -------------------------------------------------------------------------------------


def declares_sharing(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The issue's words: both SO_REUSEPORT, or both UDP with SO_REUSEADDR."""
    if a["proto"] != b["proto"]:
        return False
    return (a["reuseport"] and b["reuseport"]) or (
        a["proto"] == "udp" and a["reuseaddr"] and b["reuseaddr"]
    )


def pair_refused(
    oracle: OracleProcess, port: int, a: dict[str, Any], b: dict[str, Any]
) -> bool | None:
    """Whether the kernel refuses one of two services binding A and B, in either order;
    None when one of them cannot bind even alone."""
    refused = False
    for first, second in ((a, b), (b, a)):
        held = oracle.ask(op="hold", port=port, claim=first)["errno"]
        if held:
            oracle.ask(op="clear")
            return None
        refused |= oracle.ask(op="service", port=port, claim=second)["errno"] != 0
        oracle.ask(op="clear")
    return refused


def lint_says(registry: Path, cli: bool) -> str:
    if cli:
        done = subprocess.run([sys.executable, "-m", "portguard", "lint", str(registry)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        lines = (done.stdout + done.stderr).splitlines()
        if any(": error: " in line and line.endswith("[overlap]") for line in lines):
            return "error"
        if any(": warning: " in line and line.endswith("[share]") for line in lines):
            return "warning"
        return "none" if done.returncode == 0 else f"other: exit {done.returncode}"
    loaded = load(RegistrySource(registry))
    findings = [f for f in check_registry(loaded, None) if f.rule != "ephemeral"]
    rules = {f.rule: f.severity for f in findings}
    if rules.get("overlap") == "error":
        return "error"
    if "share" in rules:
        return "warning"
    return "none" if not findings else "other: " + "; ".join(str(f) for f in findings)


def run_lint_case(
    oracle: OracleProcess, case: dict[str, Any], workdir: Path, cli: bool
) -> dict[str, Any]:
    port, a, b = case["port"], case["a"], case["b"]
    same_a, same_b = {**a, "uid": 0}, {**b, "uid": 0}
    refused = pair_refused(oracle, port, same_a, same_b)
    if refused is None:
        return {"skipped": "a claim cannot bind alone", "problems": []}
    sharing = declares_sharing(a, b)
    if refused:
        want = "error"
    elif sharing:
        plain = {"reuseport": False, "reuseaddr": False}
        collides = pair_refused(oracle, port, {**same_a, **plain}, {**same_b, **plain})
        want = "warning" if collides else "none"
    else:
        want = "none"
    registry = workdir / f"pair-{case['index']}.yaml"
    registry.write_text(registry_text([("a.service", a), ("b.service", b)], port))
    got = lint_says(registry, cli)
    registry.unlink()
    problems = [f"lint says {got}, the kernel says {want}"] if got != want else []
    udp_reuseaddr = a["proto"] == "udp" and a["reuseaddr"] and b["reuseaddr"]
    # The warning says "only when both run as the same user": two users must be refused.
    if (
        want == "warning"
        and not udp_reuseaddr
        and not pair_refused(oracle, port, same_a, {**same_b, "uid": NOBODY})
    ):
        problems.append("reuseport shared across two users, but lint says one user only")
    return {"refused": refused, "want": want, "got": got, "problems": problems}


def random_pair(rng: random.Random, index: int) -> dict[str, Any]:
    a = random_claim(rng, lint=True)
    b = random_claim(rng, lint=True)
    if rng.random() < 0.8:
        b["proto"] = a["proto"]
    if rng.random() < 0.5:
        b["reuseport"] = a["reuseport"]
    return {"index": index, "port": FIRST_PORT + 15000 + index, "a": a, "b": b}


# --- the report -------------------------------------------------------------------------------


def dimensions(case: dict[str, Any], result: dict[str, Any]) -> list[str]:
    claim = case["claim"]
    out = [
        f"claim.proto={claim['proto']}",
        f"claim.address={address_kind(claim['address'], claim['v6only'])}",
        f"claim.uid={'same' if claim['uid'] == 0 else 'nobody'}",
        f"claim.reuseaddr={claim['reuseaddr']}",
        f"claim.reuseport={claim['reuseport']}",
        f"verdict={result['want']}",
    ]
    for spec, made in zip(result["order"], result["made"], strict=True):
        if made is not True:
            out.append("foreign.not-made")
            continue
        out += [
            f"foreign.kind={spec['proto']}-{spec['kind']}",
            f"foreign.address={address_kind(spec['address'], spec['v6only'])}",
            f"foreign.uid={'same' if spec['uid'] == claim['uid'] else 'other'}",
            f"foreign.reuseaddr={spec['reuseaddr']}",
            f"foreign.reuseport={spec['reuseport']}",
        ]
    return out


def address_kind(address: str | None, v6only: bool) -> str:
    if address is None:
        return "bare"
    if address in WILDCARDS:
        return (
            "[::]v6only"
            if address == "::" and v6only
            else ("[::]" if address == "::" else "0.0.0.0")
        )
    if address in MAPPED:
        return "v4-mapped" + ("+v6only" if v6only else "")
    if address in ABSENT:
        return "absent"
    loopback = address in ("127.0.0.1", "::1")
    return ("v6" if ":" in address else "v4") + ("-loopback" if loopback else "-on-lo")


def shrink(
    oracle: OracleProcess, case: dict[str, Any], workdir: Path, spare_port: int
) -> dict[str, Any]:
    """The case with as few foreign sockets as still disagree (each retry on a fresh port)."""
    for drop in range(len(case["foreign"]) - 1, -1, -1):
        if len(case["foreign"]) == 1:
            break
        smaller = {**case, "port": spare_port, "index": spare_port,
                   "foreign": [f for i, f in enumerate(case["foreign"]) if i != drop]}  # fmt: skip
        spare_port += 1
        if run_check_case(oracle, smaller, workdir, cli=False)["problems"]:
            case = smaller
    return case


def check_cases(oracle: OracleProcess, rng: random.Random, *, count: int, cli_every: int,
                workdir: Path, counts: Counter[str]) -> list[dict[str, Any]]:  # fmt: skip
    disagreements = []
    for index in range(count):
        case = random_case(rng, index)
        cli = index % cli_every == 0
        result = run_check_case(oracle, case, workdir, cli)
        counts.update(["check", "check.cli" if cli else "check.in-process"])
        counts.update(dimensions(case, result))
        result.pop("order")
        if result["problems"]:
            case = shrink(oracle, case, workdir, SHRINK_PORT + 10 * len(disagreements))
            registry = registry_text([(UNIT, case["claim"])], case["port"])
            disagreements.append({"case": case, "result": result, "registry": registry})
    return disagreements


def lint_cases(oracle: OracleProcess, rng: random.Random, *, count: int, cli_every: int,
               workdir: Path, counts: Counter[str]) -> list[dict[str, Any]]:  # fmt: skip
    disagreements = []
    for index in range(count):
        case = random_pair(rng, index)
        cli = index % cli_every == 0
        result = run_lint_case(oracle, case, workdir, cli)
        if "skipped" in result:
            counts.update(["lint.skipped"])
            continue
        a, b = case["a"], case["b"]
        counts.update([
            "lint", "lint.cli" if cli else "lint.in-process", f"lint.kernel={result['want']}",
            f"lint.proto={a['proto']}/{b['proto']}",
            f"lint.a={address_kind(a['address'], a['v6only'])}",
            f"lint.b={address_kind(b['address'], b['v6only'])}",
        ])  # fmt: skip
        if result["problems"]:
            registry = registry_text([("a.service", a), ("b.service", b)], case["port"])
            disagreements.append({"pair": case, "result": result, "registry": registry})
    return disagreements


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=1500)
    parser.add_argument("--pools", type=int, default=400)
    parser.add_argument("--cli-every", type=int, default=15, help="check cases")
    parser.add_argument("--lint-cli-every", type=int, default=40, help="lint pairs")
    args = parser.parse_args()
    setup_namespace()
    rng = random.Random(args.seed)
    oracle = OracleProcess()
    counts: Counter[str] = Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        disagreements = check_cases(oracle, rng, count=args.checks, cli_every=args.cli_every,
                                    workdir=workdir, counts=counts)  # fmt: skip
        disagreements += lint_cases(oracle, rng, count=args.pairs, cli_every=args.lint_cli_every,
                                    workdir=workdir, counts=counts)  # fmt: skip
        disagreements += pool_cases(oracle, rng, count=args.pools, cli_every=args.cli_every,
                                    workdir=workdir, counts=counts)  # fmt: skip
    oracle.close()
    report = {
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        "counts": dict(sorted(counts.items())),
        "disagreements": disagreements,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

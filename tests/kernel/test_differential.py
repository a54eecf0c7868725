"""portguard against the kernel itself: `check`'s verdict and `lint`'s overlap rule, case by
seeded random case, in a network namespace of their own (tests/kernel/differential.py; the
oracle, tests/kernel/oracle.py, shares no code with portguard).

Seed policy: CI runs the fixed seed below, so a red run is reproducible to the byte; set
PORTGUARD_DIFF_SEED to another number (or "random", which prints the one it drew) to explore.
A disagreement prints its minimal reproducer: the claim as a registry and the foreign sockets.
"""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"
SEED = 20261202
CHECKS = 3000  # 200 of them through the real `portguard check`
PAIRS = 2000  # 50 of them through the real `portguard lint`
POOLS = 500  # pools with random holders in them (DESIGN rule 6); every 15th through the CLI

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare(1) and ip(8) for a network namespace of its own",
)


def seed() -> int:
    chosen = os.environ.get("PORTGUARD_DIFF_SEED", str(SEED))
    return random.SystemRandom().randrange(2**32) if chosen == "random" else int(chosen)


@pytest.fixture(scope="module")
def report() -> dict:
    drawn = seed()
    command = ["unshare", "--net", sys.executable, str(HERE / "differential.py"),
               "--seed", str(drawn), "--checks", str(CHECKS), "--pairs", str(PAIRS),
               "--pools", str(POOLS)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(SRC)})  # fmt: skip
    assert done.returncode == 0, f"seed {drawn}: {done.stderr[-3000:]}"
    result: dict = json.loads(done.stdout)
    print(f"\ndifferential, seed {drawn}, {result['seconds']} s:")
    for name, count in result["counts"].items():
        print(f"  {name:36} {count:6}")
    return result


def test_check_and_lint_agree_with_the_kernel(report: dict) -> None:
    shown = "\n\n".join(
        f"{' / '.join(d['result']['problems'])}\n{json.dumps(d.get('case') or d['pair'])}\n"
        f"{d['registry']}"
        for d in report["disagreements"][:10]
    )
    assert report["disagreements"] == [], f"seed {report['seed']}:\n{shown}"


def test_every_dimension_was_really_exercised(report: dict) -> None:
    """A differential that never built a TIME-WAIT, or never saw a 77, proves nothing there."""
    counts = report["counts"]
    assert counts["check.cli"] + counts["lint.cli"] >= 200
    for kind in ("tcp-bound", "tcp-listen", "tcp-accepted", "tcp-timewait-server",
                 "tcp-outbound", "tcp-timewait-client", "udp-bound", "udp-connected"):  # fmt: skip
        assert counts.get(f"foreign.kind={kind}", 0) >= 100, kind
    for address in ("0.0.0.0", "[::]", "[::]v6only", "v4-loopback", "v4-on-lo", "v6-loopback",
                    "v6-on-lo", "v4-mapped"):  # fmt: skip
        assert counts.get(f"foreign.address={address}", 0) >= 100, address
    for dimension in ("foreign.uid=same", "foreign.uid=other", "foreign.reuseaddr=True",
                      "foreign.reuseport=True", "claim.reuseport=True",
                      "claim.uid=nobody"):  # fmt: skip
        assert counts.get(dimension, 0) >= 100, dimension
    for verdict in (0, 68, 69, 75, 77, 78):
        assert counts.get(f"verdict={verdict}", 0) >= 30, verdict
    for kernel in ("error", "warning", "none"):
        assert counts.get(f"lint.kernel={kernel}", 0) >= 100, kernel


def test_pools_were_exercised_both_ways(report: dict) -> None:
    """`check` of a pool fails exactly when the service could bind fewer than min-free of it:
    both answers, with pools partly held, by every kind of holder, through the CLI too."""
    counts = report["counts"]
    assert counts["pool"] == POOLS and counts["pool.cli"] >= 30
    assert counts["pool.verdict=0"] >= 100 and counts["pool.verdict=69"] >= 50
    assert counts["pool.partly-held"] >= 100
    for kind in ("tcp-bound", "tcp-listen", "tcp-accepted", "tcp-outbound", "udp-bound",
                 "udp-connected"):  # fmt: skip
        assert counts.get(f"pool.holder={kind}", 0) >= 100, kind

"""portguard's NAT judgement against the kernel itself (tests/kernel/nat_differential.py): a
random nftables NAT ruleset a case, and four real connections from another namespace.

Seed policy as for test_differential.py: CI runs the fixed seed below; PORTGUARD_DIFF_SEED
picks another (or "random"). Bounded to about 2 minutes: CASES cases at ~0.3 s each.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernel.test_differential import seed

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"
CASES = 400

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "nsenter", "ip", "nft")),
    reason="needs root, unshare(1), nsenter(1), ip(8) and nft(8) for namespaces of its own",
)


def test_redirected_only_when_no_connection_reaches_the_service() -> None:
    drawn = seed()
    command = ["unshare", "--net", "--mount", sys.executable, str(HERE / "nat_differential.py"),
               "--seed", str(drawn), "--cases", str(CASES)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False,
                          env={**os.environ, "PYTHONPATH": str(SRC)})  # fmt: skip
    assert done.returncode == 0, f"seed {drawn}: {done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    print(f"\nNAT differential, seed {drawn}, {report['seconds']} s:")
    for name, count in report["counts"].items():
        print(f"  {name:52} {count:6}")
    shown = "\n\n".join(f"{d['verdict']}, landed {d['landed']}\n{d['ruleset']}"
                        for d in report["disagreements"][:5])  # fmt: skip
    assert report["disagreements"] == [], f"seed {drawn}:\n{shown}"
    assert report["counts"].get("free, yet a connection went elsewhere (missed)", 0) == 0
    # Every verdict was met, and each through the real `portguard check` too.
    verdicts = {name.split(",")[0] for name in report["counts"]}
    assert {"free", "partly-redirected", "redirected"} <= verdicts
    assert report["counts"]["through the real check"] == CASES // 10

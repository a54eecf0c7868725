"""Whether a NAT rule may take the unit's ports, on the free path (freepath/nat.py): the
ruleset's generation from the kernel, in a network namespace of its own, and the marks the
full `check` leaves."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portguard.freepath import cache, nat
from tests.conftest import SRC

BINDS = [("tcp", 8080, "::")]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="netfilter netlink needs root")

GENERATIONS = """
import subprocess, sys
sys.path.insert(0, {src!r})
from portguard.freepath import nat
first = nat.generation()
subprocess.run(["nft", "add table ip portguard_test"], check=True)
print(first, nat.generation())
"""


@pytest.mark.skipif(
    shutil.which("nft") is None,
    reason="needs nft (nftables) to change a ruleset; tools/setup installs it, the package's "
    "test roots do not",
)
def test_the_generation_is_the_kernels_and_moves_with_every_change() -> None:
    code = GENERATIONS.format(src=str(SRC))
    result = subprocess.run(["unshare", "-n", sys.executable, "-I", "-c", code],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    first, second = map(int, result.stdout.split())
    assert second > first


def test_the_marks_hold_only_at_their_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "CACHE_DIR", str(tmp_path))
    generation = nat.generation()
    assert generation is not None
    netns = os.stat("/proc/self/ns/net").st_ino
    assert nat.ruleset_state() == f"{netns} {generation}"
    key = b"\x01" * 32
    assert not nat.untouched("a.service", key, BINDS)  # nothing known yet: the full check decides
    Path(nat.marker("a.service")).write_text(f"{netns} {generation} {key.hex()}")
    assert nat.untouched("a.service", key, BINDS)
    assert not nat.untouched("a.service", b"\x02" * 32, BINDS)  # another registry
    assert not nat.untouched("b.service", key, BINDS)
    Path(nat.marker("a.service")).write_text(f"{netns} {generation - 1} {key.hex()}")
    assert not nat.untouched("a.service", key, BINDS)  # the ruleset changed since
    # Another network namespace's mark, at the same number: not this ruleset's.
    Path(nat.marker("a.service")).write_text(f"{netns + 1} {generation} {key.hex()}")
    assert not nat.untouched("a.service", key, BINDS)
    Path(nat.marker()).write_text(f"{netns} {generation} none")
    assert nat.untouched("b.service", key, BINDS)  # no NAT chain at all: every unit passes


def test_one_reading_serves_every_unit_on_a_port_no_rule_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "CACHE_DIR", str(tmp_path))
    state = nat.ruleset_state()
    assert state is not None
    Path(nat.marker(nat.PORTS)).write_text(f"{state}\ntcp 80-80 30000-32767\nudp 53-53\n")
    key = b"\x01" * 32
    assert nat.untouched("any.service", key, [("tcp", 8080, "::"), ("udp", 5353, "0.0.0.0")])
    assert not nat.untouched("any.service", key, [("tcp", 30080, "::")])  # a port a rule names
    assert not nat.untouched("any.service", key, [("tcp", 8080, "127.0.0.1")])  # not judged
    assert not nat.untouched("any.service", key, [("sctp", 8080, "::")])
    netns, generation = state.split()
    Path(nat.marker(nat.PORTS)).write_text(f"{netns} {int(generation) + 1}\ntcp 80-80\n")
    assert not nat.untouched("any.service", key, [("tcp", 8080, "::")])  # another generation
    Path(nat.marker(nat.PORTS)).write_text(f"{state}\ntcp 80-x\n\xff\n")
    assert not nat.untouched("any.service", key, [("tcp", 8080, "::")])  # not ours: no trust

"""commands/redirects.py: the gap is said once per boot per unit; the marks the free path
reads are this network namespace's, at the generation that was read."""

import os
from pathlib import Path

import pytest

from portguard.commands import redirects
from portguard.freepath import cache, nat
from portguard.host.nftables import Ruleset
from portguard.policy.redirects import Judged


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cache, "CACHE_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def test_what_could_not_be_judged_is_news_once_per_boot_per_unit(run_dir: Path) -> None:
    assert redirects.first_this_boot("a.service")
    assert not redirects.first_this_boot("a.service")  # /run is emptied at the next boot
    assert redirects.first_this_boot("b.service")


@pytest.mark.skipif(os.geteuid() != 0, reason="the marks are root's (and netfilter needs it)")
def test_the_marks_carry_the_namespace_and_the_generation_read(run_dir: Path) -> None:
    state = nat.ruleset_state()
    assert state is not None
    generation = int(state.split()[1])
    key = b"\x07" * 32
    redirects.remember(Ruleset(generation, (), (), ()), "a.service", key, Judged())
    assert Path(nat.marker()).read_text() == f"{state} none"  # no NAT chain at all
    # A ruleset read at another generation (it changed meanwhile): no mark at all.
    Path(nat.marker()).unlink()
    redirects.remember(Ruleset(generation + 1, (), (), ()), "a.service", key, Judged())
    assert not Path(nat.marker()).exists()
    # What could not be judged is never remembered as judged.
    redirects.remember("the nftables ruleset (not permitted)", "a.service", key, Judged())
    assert list(run_dir.iterdir()) == []

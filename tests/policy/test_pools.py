"""A pool's verdict (policy/pools.py, through guard.check) with a fake kernel: some ports of
the pool taken, by whom, and when they free. The real kernel judges the same in
tests/kernel/test_differential.py's pool cases and the system tests (coturn, vsftpd)."""

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.probe import Attempt, Outcome, PoolFamily, binds
from portguard.policy.guard import Effects, Guarded, check
from portguard.policy.owners import Attribution, Holding, Owner, OwnerKind
from portguard.policy.report import Report, Verdict
from portguard.registry.claims import Claim, Proto

UNIT = "coturn.service"
POOL = Claim(Proto.UDP, 49152, 49161, pool=2, reuseaddr=False)
LISTENER = Claim(Proto.UDP, 3478, 3478, reuseaddr=False)
STRANGER = Owner(OwnerKind.SERVICE, "squatter.service", 4242, "nc", "root",
                 cgroup="/system.slice/squatter.service", pids=(4242,))  # fmt: skip
SELF = Owner(OwnerKind.SELF, UNIT, 900, "turnserver", pids=(900,))


def socket_on(port: int, address: str = "::") -> Occupant:
    return Occupant(Proto.UDP, "UNCONN", ipaddress.ip_address(address), port, None,
                    inode=port, uid=0, cgroup_id=7, v6only=False, expires_ms=None)  # fmt: skip


@dataclass
class Kernel:
    """Ports taken (in both families, as a dual-stack socket on [::] takes them), each by an
    owner; the owner's ports free when the clock passes `frees_at`."""

    taken: dict[int, Owner] = field(default_factory=dict)
    frees_at: dict[str, float] = field(default_factory=dict)
    now: float = 0.0
    censuses: list[set[tuple[Proto, int]]] = field(default_factory=list)
    pool_probes: int = 0

    def holder(self, port: int) -> Owner | None:
        owner = self.taken.get(port)
        if owner is None or self.now >= self.frees_at.get(owner.unit or "", float("inf")):
            return None
        return owner

    def probe(self, claims: Sequence[Claim]) -> list[Attempt]:
        return [Attempt(b, Outcome.IN_USE if self.holder(b.port) else Outcome.FREE)
                for c in claims for b in binds(c)]  # fmt: skip

    def probe_pool(self, claim: Claim) -> list[PoolFamily]:
        self.pool_probes += 1
        assert self.pool_probes < 50, "the pool is probed without the clock moving"
        families = []
        for family in binds(replace(claim, last=claim.first)):
            free = in_use = 0
            first = None
            for port in claim.ports:
                if self.holder(port) is None:
                    free += 1
                    if free >= (claim.pool or 1):
                        break
                else:
                    in_use += 1
                    first = first or Attempt(replace(family, claim=claim, port=port),
                                             Outcome.IN_USE)  # fmt: skip
            families.append(PoolFamily(claim, free, in_use, first, None))
        return families

    def census(self, ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
        asked = set(ports)
        self.censuses.append(asked)
        return [socket_on(p) for _, p in asked if self.holder(p)]

    def attribute(self, occupants: list[Occupant], also: Sequence[str], _: float) -> Attribution:
        found = []
        for occupant in occupants:
            owner = self.holder(occupant.port)
            assert owner is not None
            found.append(Holding(occupant, owner))
        return Attribution(tuple(found))

    def wait(self, pids: Sequence[int], seconds: float) -> None:
        self.now += seconds

    def check(self, *claims: Claim, wait_ms: int = 5000) -> Report:
        effects = Effects(self.probe, self.census, self.attribute, self.wait, lambda: self.now,
                          self.probe_pool)  # fmt: skip
        return check(Guarded(UNIT, claims or (LISTENER, POOL), wait_ms), effects)


def test_a_pool_with_ports_taken_serves_and_nobody_is_looked_up() -> None:
    kernel = Kernel(dict.fromkeys(range(49152, 49160), STRANGER))  # 8 of 10: 2 left
    report = kernel.check()
    assert report.verdict is Verdict.FREE
    assert kernel.censuses == []  # foreign holders in a pool that serves: audit's business
    assert "49152-49161/udp" in report.summary


def test_a_pool_that_cannot_serve_is_exhausted_naming_its_first_holder_only() -> None:
    kernel = Kernel(dict.fromkeys(range(49152, 49161), STRANGER))  # 9 of 10: min-free is 2
    report = kernel.check()
    assert report.verdict is Verdict.EXHAUSTED
    assert report.exit_code is Exit.UNAVAILABLE
    assert report.owner == STRANGER
    assert report.port == 49152
    assert report.pool == ("49152-49161/udp", 9, 2)
    assert kernel.censuses == [{(Proto.UDP, 49152)}]  # one port read, not nine
    assert "9 of its 10 ports are in use and it needs 2 free" in report.summary
    fields = report.journal_fields()
    assert fields["PORTGUARD_VERDICT"] == "exhausted"
    assert fields["MESSAGE_ID"] == "043fc7df49c1451ba7115f7a9aed4e50"
    assert (fields["PORTGUARD_POOL"], fields["PORTGUARD_POOL_IN_USE"]) == ("49152-49161/udp", "9")
    assert fields["PORTGUARD_OWNER_UNIT"] == "squatter.service"


def test_a_held_listener_is_the_verdict_before_the_pool_is_probed() -> None:
    kernel = Kernel({3478: STRANGER})
    report = kernel.check()
    assert report.verdict is Verdict.HELD
    assert kernel.pool_probes == 0


def test_the_units_own_remnant_in_an_exhausted_pool_is_waited_for() -> None:
    taken = dict.fromkeys(range(49154, 49162), STRANGER) | {49152: SELF, 49153: SELF}
    kernel = Kernel(taken, frees_at={UNIT: 1.5})
    report = kernel.check()
    assert report.verdict is Verdict.FREE
    assert kernel.now >= 1.5


def test_the_units_own_remnant_that_outlasts_the_wait_is_a_drain_timeout() -> None:
    taken = dict.fromkeys(range(49154, 49162), STRANGER) | {49152: SELF, 49153: SELF}
    report = Kernel(taken, frees_at={UNIT: 60.0}).check(wait_ms=2000)
    assert report.verdict is Verdict.DRAIN_TIMEOUT


def test_a_wide_range_bound_whole_names_its_first_holder_and_counts_the_rest() -> None:
    """A range the service binds whole at start (no pool): held, as before, but with one
    port read and attributed, not each of the 1,000 in use."""
    wide = Claim(Proto.UDP, 20000, 29999, reuseaddr=False)
    kernel = Kernel(dict.fromkeys(range(21000, 22000), STRANGER))
    report = kernel.check(wide)
    assert report.verdict is Verdict.HELD
    assert report.port == 21000
    assert kernel.censuses == [{(Proto.UDP, 21000)}]
    assert "999 more of its ports are in use" in report.summary

"""`portguard wait`'s policy with fake effects (a scripted kernel and clock); the same
behaviour against the real kernel and systemd is tests/system/test_wait.py's."""

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.probe import Attempt, Bind, Outcome, PoolFamily
from portguard.policy.owners import Attribution, Holding, Owner, OwnerKind
from portguard.policy.waiting import (
    POLL_MS,
    SIGNALLED_POLL_MS,
    Effects,
    Wake,
    until_free,
    until_listening,
)
from portguard.registry.claims import Claim, Proto

CLAIM = Claim(Proto.TCP, 8080, 8080, ipaddress.ip_address("127.0.0.1"))
BIND = Bind(CLAIM, "127.0.0.1", 8080, v6only=False)


def occupant(state: str = "LISTEN", *, expires_ms: int | None = None, cookie: int = 7) -> Occupant:
    return Occupant(Proto.TCP, state, ipaddress.ip_address("127.0.0.1"), 8080, None,
                    0 if state == "TIME-WAIT" else 99, 0, None if state == "TIME-WAIT" else 5,
                    False, expires_ms, cookie=cookie)  # fmt: skip


@dataclass
class Kernel:
    """Holds 8080 until `released_at` seconds (or for ever), as SOCKET, owned by OWNER."""

    released_at: float | None
    socket: Occupant = field(default_factory=occupant)
    owner: Owner = field(default_factory=lambda: Owner(OwnerKind.SERVICE, "old.service", pid=42))
    outcome: Outcome = Outcome.IN_USE
    now: float = 0.0
    sleeps: list[tuple[tuple[int, ...], tuple[int, ...], float]] = field(default_factory=list)
    wake: Wake | None = None  # what a sleep that reaches the release reports

    def held(self) -> bool:
        return self.released_at is None or self.now < self.released_at

    def probe(self, claims: Sequence[Claim]) -> list[Attempt]:
        return [Attempt(BIND, self.outcome if self.held() else Outcome.FREE)]

    def census(self, ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
        return [self.socket] if self.held() else []

    def attribute(self, occupants: list[Occupant]) -> Attribution:
        return Attribution(tuple(Holding(o, self.owner) for o in occupants))

    def sleep(self, pids: Sequence[int], cookies: Sequence[int], seconds: float) -> Wake | None:
        self.sleeps.append((tuple(pids), tuple(cookies), seconds))
        if self.released_at is not None and self.now < self.released_at <= self.now + seconds:
            self.now = self.released_at
            return self.wake
        self.now += seconds
        return None

    def effects(self) -> Effects:
        return Effects(self.probe, self.census, self.attribute, self.sleep, lambda: self.now)


def test_free_at_once_sleeps_never() -> None:
    kernel = Kernel(released_at=0.0)
    waited = until_free([CLAIM], 30_000, kernel.effects())
    assert (waited.code, waited.woke_by, kernel.sleeps) == (Exit.OK, (), [])
    assert waited.line == "127.0.0.1:8080/tcp free after 0ms"


def test_the_holders_exit_ends_the_sleep() -> None:
    kernel = Kernel(released_at=1.5, wake=Wake.EXIT)
    waited = until_free([CLAIM], 30_000, kernel.effects())
    assert waited.code is Exit.OK and waited.elapsed_ms == 1500
    assert waited.woke_by[-1] is Wake.EXIT
    # It slept on the holder's pidfd and its socket's cookie, a second at most each time.
    assert kernel.sleeps[0] == ((42,), (7,), SIGNALLED_POLL_MS / 1000)


def test_the_holders_are_attributed_once_while_they_stay_the_same() -> None:
    kernel = Kernel(released_at=5.0)
    calls: list[int] = []

    def attribute(occupants: list[Occupant]) -> Attribution:
        calls.append(len(occupants))
        return kernel.attribute(occupants)

    effects = Effects(kernel.probe, kernel.census, attribute, kernel.sleep, lambda: kernel.now)
    waited = until_free([CLAIM], 30_000, effects)
    assert waited.code is Exit.OK and len(kernel.sleeps) == 5  # a second at a time
    assert calls == [1]


def test_without_a_pid_to_wait_on_it_looks_again_at_the_interval() -> None:
    kernel = Kernel(released_at=0.2, owner=Owner(OwnerKind.UNKNOWN))
    waited = until_free([CLAIM], 30_000, kernel.effects())
    assert waited.code is Exit.OK
    assert {seconds for _, _, seconds in kernel.sleeps} == {POLL_MS / 1000}
    assert set(waited.woke_by) == {Wake.INTERVAL}


def test_time_wait_is_slept_out_to_its_timer() -> None:
    kernel = Kernel(released_at=59.9, socket=occupant("TIME-WAIT", expires_ms=59_900),
                    owner=Owner(OwnerKind.TIME_WAIT))  # fmt: skip
    waited = until_free([CLAIM], 75_000, kernel.effects())
    assert waited.code is Exit.OK
    assert kernel.sleeps == [((), (), 59.905)]  # no pid, no cookie: the timer alone
    assert waited.woke_by == (Wake.TIMER,)


def test_at_the_timeout_the_holder_and_the_fix_are_named() -> None:
    kernel = Kernel(released_at=None)
    waited = until_free([CLAIM], 2_000, kernel.effects())
    assert waited.code is Exit.TEMPFAIL
    assert waited.line.startswith("127.0.0.1:8080/tcp is still in use after 2s: held by "
                                  "old.service (pid 42); stop it with 'systemctl stop "
                                  "old.service'")  # fmt: skip
    assert [h.owner.unit for h in waited.holders] == ["old.service"]


def test_what_waiting_cannot_fix_ends_at_once() -> None:
    for outcome, code in ((Outcome.UNASSIGNABLE, Exit.NOHOST), (Outcome.DENIED, Exit.NOPERM)):
        kernel = Kernel(released_at=None, outcome=outcome)
        waited = until_free([CLAIM], 30_000, kernel.effects())
        assert (waited.code, kernel.sleeps) == (code, []), outcome
        assert "waiting cannot change that" in waited.line


def test_a_census_that_cannot_run_still_waits_and_says_so() -> None:
    kernel = Kernel(released_at=None)

    def no_census(ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
        raise OSError("netlink: permission denied")

    effects = Effects(kernel.probe, no_census, kernel.attribute, kernel.sleep, lambda: kernel.now)
    waited = until_free([CLAIM], 500, effects)
    assert waited.code is Exit.TEMPFAIL
    assert "by a holder not found out" in waited.line and "permission denied" in waited.line


def test_listening_names_the_listener_and_refuses_a_stranger() -> None:
    kernel = Kernel(released_at=None, owner=Owner(OwnerKind.SERVICE, "api.service", pid=9))
    ok = until_listening([CLAIM], 1_000, kernel.effects(), units=("api.service",))
    assert ok.code is Exit.OK and "by api.service (pid 9)" in ok.line
    squat = until_listening([CLAIM], 1_000, kernel.effects(), units=("web.service",))
    assert squat.code is Exit.UNAVAILABLE
    assert "api.service (pid 9), not web.service: a squatter" in squat.line


def test_listening_times_out_when_nothing_listens() -> None:
    kernel = Kernel(released_at=0.0)
    waited = until_listening([CLAIM], 300, kernel.effects())
    assert waited.code is Exit.TEMPFAIL
    assert waited.line == "nothing listens on 127.0.0.1:8080/tcp after 300ms"
    assert set(waited.woke_by) == {Wake.INTERVAL}


# --- pools (DESIGN rule 6) ----------------------------------------------------------------------

POOL = Claim(Proto.TCP, 8080, 8089, ipaddress.ip_address("127.0.0.1"), pool=2)


def pool_effects(kernel: Kernel, free_ports: int) -> Effects:
    """The pool has FREE_PORTS bindable beside 8080 while the kernel holds 8080, and one more
    once it lets go."""

    def probe_pool(claim: Claim) -> list[PoolFamily]:
        free = free_ports + (0 if kernel.held() else 1)
        first = Attempt(BIND, Outcome.IN_USE) if kernel.held() else None
        return [PoolFamily(claim, min(free, claim.pool or 1), 10 - free, first, None)]

    def probe(claims: Sequence[Claim]) -> list[Attempt]:
        assert not claims  # the pool is probed as one, never bind by bind
        return []

    return Effects(probe, kernel.census, kernel.attribute, kernel.sleep, lambda: kernel.now,
                   probe_pool)  # fmt: skip


def test_a_pool_that_can_serve_is_free_without_waiting_for_its_holders() -> None:
    kernel = Kernel(released_at=None)
    waited = until_free([POOL], 5_000, pool_effects(kernel, free_ports=2))
    assert (waited.code, kernel.sleeps) == (Exit.OK, [])
    assert waited.line == "min-free 2 of pool 127.0.0.1:8080-8089/tcp free after 0ms"


def test_a_pool_short_of_min_free_waits_for_the_holder_of_its_first_port_in_use() -> None:
    kernel = Kernel(released_at=1.5, wake=Wake.EXIT)
    waited = until_free([POOL], 5_000, pool_effects(kernel, free_ports=1))
    assert waited.code is Exit.OK and waited.elapsed_ms == 1500
    assert kernel.sleeps[0][0] == (42,)  # the holder's pidfd


def test_a_pool_that_stays_short_times_out_naming_a_holder() -> None:
    kernel = Kernel(released_at=None)
    waited = until_free([POOL], 2_000, pool_effects(kernel, free_ports=0))
    assert waited.code is Exit.TEMPFAIL
    assert "old.service" in waited.line

"""The check policy (guard.py) with injected fakes: no kernel, no bus, a clock that only moves
when the policy waits."""

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.probe import Attempt, Bind, Outcome, binds
from portguard.host.processes import SocketOptions
from portguard.host.units import UnitFacts
from portguard.policy.guard import Effects, Guarded, Wait, check, decide
from portguard.policy.owners import Attribution, Holding, Owner, OwnerKind
from portguard.policy.report import Report, Verdict
from portguard.registry.claims import Claim, Proto

UNIT = "myapp.service"
PORT = 8080
WILDCARD = Claim(Proto.TCP, PORT, PORT)
# TIME-WAIT entries are IPv4 here; a claim on IPv4's wildcard is proved by one bind.
ANY_V4 = ipaddress.ip_address("0.0.0.0")


def guarded(
    *claims: Claim, wait_ms: int = 10_000, via: tuple[str, ...] = (), team: str | None = None
) -> Guarded:
    return Guarded(UNIT, claims or (WILDCARD,), wait_ms, via, team)


def listener(port: int = PORT, *, address: str = "::", cgroup_id: int = 77) -> Occupant:
    return Occupant(Proto.TCP, "LISTEN", ipaddress.ip_address(address), port, None,
                    inode=4242, uid=0, cgroup_id=cgroup_id, v6only=False,
                    expires_ms=None)  # fmt: skip


def time_wait(expires_ms: int, port: int = PORT) -> Occupant:
    peer = (ipaddress.ip_address("10.0.0.9"), 51515)
    return Occupant(Proto.TCP, "TIME-WAIT", ipaddress.ip_address("10.0.0.1"), port, peer,
                    inode=0, uid=0, cgroup_id=None, v6only=False,
                    expires_ms=expires_ms)  # fmt: skip


SERVICE = Owner(OwnerKind.SERVICE, "nginx.service", 1312, "nginx", "root",
                cgroup="/system.slice/nginx.service", pids=(1312, 1313))  # fmt: skip
SOCKET = Owner(OwnerKind.SOCKET, "myapp.socket", 1, "systemd", activates=(UNIT,))
SELF = Owner(OwnerKind.SELF, UNIT, 900, "myapp", pids=(900, 901))
TIME_WAIT = Owner(OwnerKind.TIME_WAIT)


@dataclass
class World:
    """A fake host: the claimed ports are busy until `busy_until` (None: for ever).

    `exits_at` is when the holder's processes exit; a wait on PIDs returns then, or when
    its timeout passes, whichever comes first; the clock moves only in `wait`.
    """

    holdings: list[Holding] = field(default_factory=list)
    busy_until: float | None = None
    exits_at: float | None = None
    outcome: Outcome = Outcome.IN_USE  # what a busy port's trial bind says
    census_error: OSError | None = None
    facts: dict[str, UnitFacts] = field(default_factory=dict)
    now: float = 0.0
    probes: int = 0
    censuses: list[set[tuple[Proto, int]]] = field(default_factory=list)
    attributions: list[tuple[list[Occupant], tuple[str, ...], float]] = field(default_factory=list)
    waits: list[tuple[tuple[int, ...], float]] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.busy_until is None or self.now < self.busy_until

    def probe(self, claims: Sequence[Claim]) -> list[Attempt]:
        self.probes += 1
        # A policy that loops without waiting fails here instead of hanging the suite.
        assert self.probes <= 100, "check() keeps probing without the clock moving"
        outcome = self.outcome if self.busy else Outcome.FREE
        return [Attempt(b, outcome) for c in claims for b in binds(c)]

    def census(self, ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
        self.censuses.append(set(ports))
        if self.census_error is not None:
            raise self.census_error
        return [h.occupant for h in self.holdings] if self.busy else []

    def attribute(
        self, occupants: list[Occupant], also: Sequence[str], timeout: float
    ) -> Attribution:
        self.attributions.append((occupants, tuple(also), timeout))
        found = tuple(h for h in self.holdings if h.occupant in occupants)
        return Attribution(found, facts=self.facts)

    def wait(self, pids: Sequence[int], seconds: float) -> None:
        self.waits.append((tuple(pids), seconds))
        until = self.now + seconds
        if pids and self.exits_at is not None:
            until = min(until, max(self.now, self.exits_at))
        self.now = until

    def clock(self) -> float:
        return self.now

    def effects(self) -> Effects:
        return Effects(self.probe, self.census, self.attribute, self.wait, self.clock)

    def check(self, subject: Guarded | None = None) -> Report:
        return check(subject or guarded(), self.effects())


def held_by(owner: Owner, occupant: Occupant | None = None) -> list[Holding]:
    return [Holding(occupant or listener(), owner)]


# --- verdicts the probe alone gives -------------------------------------------------------------


def test_free_port_is_free_without_census() -> None:
    world = World(busy_until=0.0)
    report = world.check()
    assert report.verdict is Verdict.FREE
    assert report.exit_code is Exit.OK
    assert (world.probes, world.censuses, world.waits) == (1, [], [])


def test_unassignable_address_exits_68() -> None:
    vip = Claim(Proto.TCP, PORT, PORT, ipaddress.ip_address("192.0.2.10"))
    world = World(outcome=Outcome.UNASSIGNABLE)
    report = world.check(guarded(vip))
    assert report.verdict is Verdict.UNASSIGNABLE
    assert int(report.exit_code) == 68
    assert report.address == "192.0.2.10"
    assert "not an address of this host" in report.summary
    assert "192.0.2.10" in (report.remedy or "")
    assert world.censuses == []


def test_denied_privileged_port_exits_77_with_capability_remedy() -> None:
    world = World(outcome=Outcome.DENIED)
    report = world.check(guarded(Claim(Proto.TCP, 80, 80)))
    assert report.verdict is Verdict.DENIED
    assert int(report.exit_code) == 77
    assert report.port == 80
    assert "privileged" in (report.remedy or "")
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in (report.remedy or "")
    assert world.censuses == [] and world.waits == []


def test_denied_unprivileged_port_points_at_socket_bind_policy() -> None:
    report = World(outcome=Outcome.DENIED).check()
    assert report.verdict is Verdict.DENIED
    assert "SocketBindDeny=" in (report.remedy or "")
    assert "CAP_NET_BIND_SERVICE" not in (report.remedy or "")


def test_unassignable_wins_over_in_use() -> None:
    """One claim's address is missing, another is busy: the missing address is the news."""
    vip = Claim(Proto.TCP, 9090, 9090, ipaddress.ip_address("192.0.2.10"))

    def probe(claims: Sequence[Claim]) -> list[Attempt]:
        return [
            Attempt(b, Outcome.UNASSIGNABLE if c is vip else Outcome.IN_USE)
            for c in claims
            for b in binds(c)
        ]

    world = World(holdings=held_by(SERVICE))
    effects = Effects(probe, world.census, world.attribute, world.wait, world.clock)
    report = check(guarded(WILDCARD, vip), effects)
    assert report.verdict is Verdict.UNASSIGNABLE
    assert report.port == 9090


# --- who holds it -------------------------------------------------------------------------------


def test_foreign_service_is_held_at_once_without_waiting() -> None:
    world = World(holdings=held_by(SERVICE))
    report = world.check()
    assert report.verdict is Verdict.HELD
    assert int(report.exit_code) == 69
    assert report.owner == SERVICE
    assert world.waits == []
    assert world.censuses == [{(Proto.TCP, PORT)}]
    _, also, timeout = world.attributions[0]
    assert also == (UNIT,)
    assert 0.2 <= timeout <= 1.0
    assert report.line().startswith(
        "portguard: 0.0.0.0:8080/tcp is held by nginx.service (pid 1312 nginx) — "
        "registered to myapp.service; stop it with 'systemctl stop nginx.service'"
    )


def test_socket_unit_in_via_holds_it_for_the_service() -> None:
    world = World(holdings=held_by(SOCKET))
    report = world.check(guarded(via=("myapp.socket",)))
    assert report.verdict is Verdict.FREE
    assert report.exit_code is Exit.OK
    assert "via" in report.summary
    assert world.waits == []


def test_socket_unit_not_in_via_is_foreign() -> None:
    world = World(holdings=held_by(SOCKET))
    report = world.check()
    assert report.verdict is Verdict.HELD
    assert report.owner is not None and report.owner.kind is OwnerKind.SOCKET
    assert world.waits == []


def test_service_in_via_is_waited_for() -> None:
    handing_over = Owner(OwnerKind.SERVICE, "myapp-old.service", 700, "old", pids=(700,))
    world = World(holdings=held_by(handing_over), busy_until=0.375, exits_at=0.375)
    report = world.check(guarded(via=("myapp-old.service",)))
    assert world.waits[0] == ((700,), 10.0)
    assert report.verdict is Verdict.RELEASED
    assert report.waited_ms == 375


def test_own_leftover_is_waited_for_then_released() -> None:
    world = World(holdings=held_by(SELF), busy_until=0.25, exits_at=0.25)
    report = world.check()
    assert world.waits == [((900, 901), 10.0)]
    assert world.probes == 2
    assert report.verdict is Verdict.RELEASED
    assert report.exit_code is Exit.OK
    assert report.waited_ms == 250
    assert report.owner == SELF
    assert "free after 250ms" in report.summary
    assert report.journal_fields()["PORTGUARD_WAITED_MS"] == "250"


def test_service_of_the_same_unit_seen_from_outside_counts_as_its_own() -> None:
    """Run by hand (not from the unit's cgroup), the leftover is attributed as its service."""
    same = Owner(OwnerKind.SERVICE, UNIT, 900, "myapp", pids=(900,))
    world = World(holdings=held_by(same), busy_until=0.125, exits_at=0.125)
    report = world.check()
    assert report.verdict is Verdict.RELEASED
    assert world.waits[0][0] == (900,)


def test_own_leftover_that_never_leaves_times_out_after_the_deadline() -> None:
    world = World(holdings=held_by(SELF))
    report = world.check(guarded(wait_ms=2_000))
    assert report.verdict is Verdict.DRAIN_TIMEOUT
    assert int(report.exit_code) == 75
    assert world.waits == [((900, 901), 2.0)]
    assert report.waited_ms == 2_000
    assert world.now == pytest.approx(2.0)
    assert "still held by a leftover process of myapp.service itself" in report.summary
    assert "after 2s" in report.summary


def test_holder_that_hides_its_pids_is_reprobed_not_waited_on_blindly() -> None:
    hidden = Owner(OwnerKind.SELF, UNIT)
    world = World(holdings=held_by(hidden), busy_until=0.5)
    report = world.check()
    assert report.verdict is Verdict.RELEASED
    assert all(pids == () and seconds <= 0.2 + 1e-9 for pids, seconds in world.waits)
    assert len(world.waits) >= 2


# --- TIME-WAIT ----------------------------------------------------------------------------------


def test_time_wait_blocks_a_bind_with_reuseaddr_when_it_is_all_there_is() -> None:
    """Seen 3: a TIME-WAIT left by a socket without SO_REUSEADDR blocks even a bind that sets
    it. The probe said busy and nothing else is on the port: it is the TIME-WAIT, with a
    bounded wait, not "an unknown holder"."""
    world = World(holdings=held_by(TIME_WAIT, time_wait(3_000)), busy_until=3.0)
    report = world.check(guarded(Claim(Proto.TCP, PORT, PORT, ANY_V4, reuseaddr=True)))
    assert world.waits == [((), 3.0)]
    assert report.verdict is Verdict.RELEASED
    assert "TIME-WAIT" in report.summary


def connection(address: str, state: str = "ESTAB", *, expires_ms: int | None = None) -> Occupant:
    """A connection's end on PORT, as sock_diag shows it (no v6only for connections)."""
    peer = (ipaddress.ip_address(address), 51515)
    return Occupant(Proto.TCP, state, ipaddress.ip_address(address), PORT, peer,
                    inode=0 if expires_ms else 5151, uid=0,
                    cgroup_id=None if expires_ms else 78, v6only=False,
                    expires_ms=expires_ms)  # fmt: skip


def options(
    *, reuseaddr: bool = False, reuseport: bool = False, v6only: bool = False
) -> SocketOptions:
    return SocketOptions(reuseaddr=reuseaddr, reuseport=reuseport, v6only=v6only)


def test_a_dual_stack_leftover_connection_is_named_for_ipv4s_wildcard() -> None:
    """Seen 2: a connection a [::] listener accepted shows as [::1]:P, yet it blocks
    0.0.0.0:P. The owner is named, not "an unknown holder"."""
    holdings = [Holding(connection("::1"), SERVICE, options())]
    report = World(holdings=holdings).check(guarded(Claim(Proto.TCP, PORT, PORT, ANY_V4)))
    assert report.verdict is Verdict.HELD
    assert report.owner == SERVICE
    assert report.state == "ESTAB"


def test_a_v6only_connection_does_not_explain_ipv4s_wildcard() -> None:
    """Read from its holder, the socket is v6only: not the blocker; the TIME-WAIT is."""
    holdings = [Holding(connection("::1"), SERVICE, options(v6only=True)),
                Holding(connection("::ffff:127.0.0.1", "TIME-WAIT", expires_ms=3_000),
                        TIME_WAIT)]  # fmt: skip
    world = World(holdings=holdings, busy_until=3.0)
    report = world.check(guarded(Claim(Proto.TCP, PORT, PORT, ANY_V4)))
    assert report.verdict is Verdict.RELEASED
    assert world.waits == [((), 3.0)]


def test_a_dual_stack_time_wait_that_outlasts_the_wait_is_a_drain_timeout() -> None:
    """Seen 2 and 3 together: only a TIME-WAIT shown as [::ffff:127.0.0.1]:P is there, and
    the claim sets SO_REUSEADDR; with `wait: 0s` it is 75, naming the seconds left."""
    leftover = connection("::ffff:127.0.0.1", "TIME-WAIT", expires_ms=42_000)
    world = World(holdings=[Holding(leftover, TIME_WAIT)])
    report = world.check(guarded(Claim(Proto.TCP, PORT, PORT, ANY_V4), wait_ms=0))
    assert report.verdict is Verdict.DRAIN_TIMEOUT
    assert int(report.exit_code) == 75
    assert "TIME-WAIT for 42s more" in report.summary


def test_a_connection_that_set_reuseaddr_too_does_not_block_a_reuseaddr_bind() -> None:
    """Both set SO_REUSEADDR: the kernel lets the bind pass the connection, so the TIME-WAIT
    beside it is what blocks, and the service waits for it."""
    claim = Claim(Proto.TCP, PORT, PORT, ANY_V4, reuseaddr=True)
    left = connection("127.0.0.1", "TIME-WAIT", expires_ms=2_000)
    holdings = [Holding(connection("127.0.0.1"), SERVICE, options(reuseaddr=True)),
                Holding(left, TIME_WAIT)]  # fmt: skip
    world = World(holdings=holdings, busy_until=2.0)
    assert world.check(guarded(claim)).verdict is Verdict.RELEASED
    # Its holder did not set it: the connection is what blocks, at once.
    holdings[0] = Holding(connection("127.0.0.1"), SERVICE, options(reuseaddr=False))
    assert World(holdings=holdings).check(guarded(claim)).verdict is Verdict.HELD


def test_a_listener_of_the_same_reuseport_group_is_not_the_blocker() -> None:
    claim = Claim(Proto.TCP, PORT, PORT, ANY_V4, reuseport=True)
    same_user = Holding(listener(address="0.0.0.0"), SERVICE, options(reuseport=True))
    tw = Holding(connection("127.0.0.1", "TIME-WAIT", expires_ms=1_000), TIME_WAIT)
    world = World(holdings=[same_user, tw], busy_until=1.0)
    subject = replace(guarded(claim), uid=0)
    assert world.check(subject).verdict is Verdict.RELEASED
    # Another user's SO_REUSEPORT listener is not in the group: it blocks.
    other = replace(subject, uid=1000)
    assert World(holdings=[same_user, tw]).check(other).verdict is Verdict.HELD


def test_time_wait_with_reuseaddr_does_not_stretch_a_wait_for_a_leftover() -> None:
    bind = next(binds(WILDCARD))
    holdings = (Holding(listener(), SELF), Holding(time_wait(5_000), TIME_WAIT))
    decision = decide(guarded(), [Attempt(bind, Outcome.IN_USE)], Attribution(holdings),
                      elapsed_ms=0, deadline_ms=10_000)  # fmt: skip
    assert isinstance(decision, Wait)
    assert decision.pids == (900, 901)
    assert decision.until_ms == 10_000
    assert decision.blocker.owner == SELF


def test_time_wait_without_reuseaddr_waits_for_the_timer() -> None:
    claim = Claim(Proto.TCP, PORT, PORT, ANY_V4, reuseaddr=False)
    world = World(holdings=held_by(TIME_WAIT, time_wait(3_000)), busy_until=3.0)
    report = world.check(guarded(claim))
    assert world.waits == [((), 3.0)]
    assert report.verdict is Verdict.RELEASED
    assert report.waited_ms == 3_000
    assert "TIME-WAIT" in report.summary


def test_time_wait_longer_than_the_wait_fails_at_once_naming_the_time_left() -> None:
    claim = Claim(Proto.TCP, PORT, PORT, ANY_V4, reuseaddr=False)
    world = World(holdings=held_by(TIME_WAIT, time_wait(30_000)))
    report = world.check(guarded(claim, wait_ms=10_000))
    assert report.verdict is Verdict.DRAIN_TIMEOUT
    assert world.waits == []
    assert "TIME-WAIT for 30s more" in report.summary
    assert "wait of 10s" in report.summary
    assert report.state == "TIME-WAIT"
    assert report.owner == TIME_WAIT


# --- deadlines and what could not be found out --------------------------------------------------


def test_timeout_start_sec_shortens_the_deadline() -> None:
    facts = {UNIT: UnitFacts(UNIT, "activating", "start-pre", timeout_start_ms=5_000)}
    world = World(holdings=held_by(SELF), facts=facts)
    report = world.check(guarded(wait_ms=10_000))
    # 5s less a tenth, at least a second: systemd keeps room to start the service itself.
    assert world.waits == [((900, 901), 4.0)]
    assert report.verdict is Verdict.DRAIN_TIMEOUT
    assert report.waited_ms == 4_000


def test_timeout_start_sec_longer_than_the_wait_changes_nothing() -> None:
    facts = {UNIT: UnitFacts(UNIT, "activating", "start-pre", timeout_start_ms=90_000)}
    world = World(holdings=held_by(SELF), facts=facts)
    world.check(guarded(wait_ms=3_000))
    assert world.waits == [((900, 901), 3.0)]


def test_census_failure_is_held_with_a_gap() -> None:
    world = World(census_error=PermissionError(1, "Operation not permitted"))
    report = world.check()
    assert report.verdict is Verdict.HELD
    assert report.owner is None
    assert len(world.censuses) == 1
    assert world.waits == []
    assert any("socket table could not be read" in gap for gap in report.gaps)
    # A census that never ran cannot say it found nothing.
    assert not any("no socket on this port was found" in gap for gap in report.gaps)
    assert "not found out:" in report.line()
    assert "PORTGUARD_UNKNOWN" in report.journal_fields()


def test_empty_census_is_retried_once_then_held_unknown() -> None:
    world = World(holdings=[])
    report = world.check()
    assert world.probes == 2
    assert len(world.censuses) == 2
    assert world.waits == []
    assert report.verdict is Verdict.HELD
    assert report.owner is None
    assert "unknown holder" in report.summary
    assert any("no socket on this port" in gap for gap in report.gaps)


def test_empty_census_then_free_on_the_retry() -> None:
    """The holder left between probe and census: the second probe finds the port free."""
    world = World(holdings=[])
    probes: list[Callable[[Sequence[Claim]], list[Attempt]]] = []

    def probe(claims: Sequence[Claim]) -> list[Attempt]:
        probes.append(probe)
        outcome = Outcome.IN_USE if len(probes) == 1 else Outcome.FREE
        return [Attempt(b, outcome) for c in claims for b in binds(c)]

    effects = Effects(probe, world.census, world.attribute, world.wait, world.clock)
    report = check(guarded(), effects)
    assert report.verdict is Verdict.FREE
    assert len(probes) == 2


def test_only_busy_ports_go_to_the_census() -> None:
    other = Claim(Proto.UDP, 5353, 5353)

    def probe(claims: Sequence[Claim]) -> list[Attempt]:
        return [
            Attempt(b, Outcome.IN_USE if c.proto is Proto.TCP else Outcome.FREE)
            for c in claims
            for b in binds(c)
        ]

    world = World(holdings=held_by(SERVICE))
    effects = Effects(probe, world.census, world.attribute, world.wait, world.clock)
    check(guarded(WILDCARD, other), effects)
    assert world.censuses == [{(Proto.TCP, PORT)}]


def test_holder_on_another_address_does_not_block() -> None:
    """A listener on 127.0.0.1 cannot be why a bind to 192.0.2.1 failed."""
    claim = Claim(Proto.TCP, PORT, PORT, ipaddress.ip_address("192.0.2.1"))
    bind = Bind(claim, "192.0.2.1", PORT, v6only=False)
    holdings = (Holding(listener(address="127.0.0.1"), SERVICE),)
    decision = decide(guarded(claim), [Attempt(bind, Outcome.IN_USE)], Attribution(holdings),
                      elapsed_ms=0, deadline_ms=10_000)  # fmt: skip
    assert isinstance(decision, Report)
    assert decision.verdict is Verdict.HELD
    assert decision.owner is None


def test_foreign_holder_wins_over_own_leftover() -> None:
    bind = next(binds(WILDCARD))
    holdings = (Holding(listener(address="0.0.0.0"), SELF), Holding(listener(), SERVICE))
    decision = decide(guarded(), [Attempt(bind, Outcome.IN_USE)], Attribution(holdings),
                      elapsed_ms=0, deadline_ms=10_000)  # fmt: skip
    assert isinstance(decision, Report)
    assert decision.verdict is Verdict.HELD
    assert decision.owner == SERVICE


def test_decide_past_the_deadline_is_a_drain_timeout() -> None:
    bind = next(binds(WILDCARD))
    decision = decide(guarded(), [Attempt(bind, Outcome.IN_USE)],
                      Attribution((Holding(listener(), SELF),)),
                      elapsed_ms=10_000, deadline_ms=10_000)  # fmt: skip
    assert isinstance(decision, Report)
    assert decision.verdict is Verdict.DRAIN_TIMEOUT


@pytest.mark.parametrize(
    "owner",
    [
        Owner(OwnerKind.CONTAINER, "docker.service", 4000, "docker-proxy", container="3f2a" * 16,
              container_name="web"),
        Owner(OwnerKind.SESSION, "session-3.scope", 5000, "python3", "alice"),
        Owner(OwnerKind.USER_SERVICE, "app.service", 5001, "app", "alice"),
        Owner(OwnerKind.SCOPE, "run-r1.scope", 5002, "sleep"),
        Owner(OwnerKind.UNKNOWN, cgroup="/machine.slice/x"),
    ],
    ids=lambda o: str(o.kind),
)  # fmt: skip
def test_every_other_owner_kind_is_held_at_once(owner: Owner) -> None:
    world = World(holdings=held_by(owner))
    report = world.check()
    assert report.verdict is Verdict.HELD
    assert report.owner == owner
    assert world.waits == []


# --- the listeners first (issue 29) -------------------------------------------------------------


@dataclass
class ListeningWorld(World):
    """The host with a census of listeners alone beside the whole one, as the guard has."""

    listened: list[set[tuple[Proto, int]]] = field(default_factory=list)

    def listening(self, ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
        self.listened.append(set(ports))
        occupants = [h.occupant for h in self.holdings] if self.busy else []
        return [o for o in occupants if o.state == "LISTEN"]

    def effects(self) -> Effects:
        return replace(super().effects(), listening=self.listening)


def test_a_foreign_listener_is_held_without_reading_the_connections() -> None:
    world = ListeningWorld(holdings=held_by(SERVICE))
    report = world.check()
    assert report.verdict is Verdict.HELD and report.owner == SERVICE
    assert world.listened == [{(Proto.TCP, PORT)}]
    assert world.censuses == []  # the whole table was never asked for


def test_with_no_listener_the_whole_census_finds_the_connection() -> None:
    """A client connection given the port: no listener explains the bind error."""
    world = ListeningWorld(holdings=held_by(SERVICE, connection("0.0.0.0")))
    report = world.check()
    assert report.verdict is Verdict.HELD and report.owner == SERVICE
    assert world.listened == [{(Proto.TCP, PORT)}]
    assert world.censuses == [{(Proto.TCP, PORT)}]


def test_the_units_own_listener_is_judged_on_every_socket() -> None:
    """Its own leftover listener, and someone else's connection that blocks the bind as well:
    the whole census is read, and the foreign socket fails the start at once, as it did when
    the whole census was all there was."""
    holdings = [*held_by(SELF), Holding(connection("::1"), SERVICE, options())]
    subject = guarded(Claim(Proto.TCP, PORT, PORT, ANY_V4))
    world = ListeningWorld(holdings=holdings)
    report = world.check(subject)
    assert report.verdict is Verdict.HELD and report.owner == SERVICE
    assert world.censuses == [{(Proto.TCP, PORT)}]
    assert world.waits == []
    assert report == World(holdings=holdings).check(subject)


def test_the_units_own_listener_alone_is_still_waited_for() -> None:
    world = ListeningWorld(holdings=held_by(SELF), busy_until=0.25, exits_at=0.25)
    report = world.check()
    assert report.verdict is Verdict.RELEASED
    assert world.waits == [((900, 901), 10.0)]

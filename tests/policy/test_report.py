"""A verdict as the journal, stderr and the exit code show it (report.py)."""

import ipaddress
import re
from dataclasses import replace

import pytest

from portguard.errors import Exit
from portguard.host.occupants import Occupant
from portguard.host.probe import Attempt, Outcome, binds
from portguard.policy.guard import Guarded, decide
from portguard.policy.owners import Attribution, Holding, Owner, OwnerKind
from portguard.policy.report import (
    EXIT,
    MESSAGE_ID,
    Report,
    Verdict,
    client_remedy,
    describe_owner,
    remedy_for,
    took_from_ephemeral_range,
)
from portguard.registry.claims import Claim, Proto
from portguard.registry.localports import LocalPorts, PortSet

NGINX = Owner(OwnerKind.SERVICE, "nginx.service", 1312, "nginx", "root",
              cgroup="/system.slice/nginx.service")  # fmt: skip
OWNERS = [
    NGINX,
    Owner(OwnerKind.SOCKET, "myapp.socket", 1, "systemd", activates=("myapp.service",)),
    Owner(OwnerKind.SCOPE, "run-r42.scope", 77, "sleep"),
    Owner(OwnerKind.SESSION, "session-3.scope", 5000, "python3", "alice"),
    Owner(OwnerKind.USER_SERVICE, "app.service", 5001, "app", "alice"),
    Owner(OwnerKind.CONTAINER, "docker.service", 4000, "docker-proxy",
          container="3f2a9c0b1d2e" + "0" * 52, container_name="web"),
    Owner(OwnerKind.SELF, "myapp.service", 900, "myapp"),
    Owner(OwnerKind.TIME_WAIT),
    Owner(OwnerKind.UNKNOWN, cgroup="/machine.slice/vm.scope"),
    Owner(OwnerKind.UNKNOWN),
]  # fmt: skip
# Advice to signal a process, in any spelling; `KillMode=` names a unit setting, not advice.
SIGNALLING = re.compile(r"\b(p?kill(all)?|SIG[A-Z]{3,}|fuser\s+-k)\b", re.IGNORECASE)


def occupant(state: str = "LISTEN") -> Occupant:
    return Occupant(Proto.TCP, state, ipaddress.ip_address("0.0.0.0"), 8080, None, 31337, 0,
                    77, v6only=False, expires_ms=None)  # fmt: skip


def held_report(owner: Owner = NGINX, *, team: str | None = None, elapsed_ms: int = 0) -> Report:
    """The report `check` gives when OWNER holds 0.0.0.0:8080/tcp for myapp.service (for the
    unit's own remnants: once ELAPSED_MS reaches the 10 s wait)."""
    claim = Claim(Proto.TCP, 8080, 8080, ipaddress.ip_address("0.0.0.0"))
    guarded = Guarded("myapp.service", (claim,), 10_000, team=team)
    attempt = Attempt(next(binds(claim)), Outcome.IN_USE)
    attribution = Attribution((Holding(occupant(), owner),))
    report = decide(guarded, [attempt], attribution, elapsed_ms=elapsed_ms, deadline_ms=10_000)
    assert isinstance(report, Report)
    return report


def test_stderr_line_names_the_holder_the_registered_unit_and_the_fix() -> None:
    assert held_report().line() == (
        "portguard: 0.0.0.0:8080/tcp is held by nginx.service (pid 1312 nginx) — registered to "
        "myapp.service; stop it with 'systemctl stop nginx.service' (and 'systemctl disable "
        "nginx.service' if it should not run), or move one of the two to another port"
    )


@pytest.mark.parametrize("kind", [OwnerKind.SERVICE, OwnerKind.SOCKET])
def test_a_transient_unit_is_never_to_be_disabled(kind: OwnerKind) -> None:
    """`systemd-run --unit=adhoc ...`: there is no unit file for `systemctl disable` to act on
    (DESIGN rule 3); what started it is the place to stop it for good."""
    adhoc = Owner(kind, f"adhoc.{kind.value}", 1312, "python3", "root", transient=True)
    fix = remedy_for(adhoc, unit="myapp.service", port=8080, proto="tcp")
    assert "disable" not in fix.replace("nothing to disable", "")
    assert f"'systemctl stop adhoc.{kind.value}'" in fix
    lasting = remedy_for(replace(adhoc, transient=False), unit="myapp.service", port=8080,
                         proto="tcp")  # fmt: skip
    assert f"'systemctl disable adhoc.{kind.value}'" in lasting


def test_stderr_line_names_the_team_and_what_could_not_be_found_out() -> None:
    report = Report(Verdict.HELD, "myapp.service", "0.0.0.0:8080/tcp is held by x", "fix it",
                    gaps=("systemd did not answer", "no Docker API"))  # fmt: skip
    assert report.line() == (
        "portguard: 0.0.0.0:8080/tcp is held by x; fix it; "
        "not found out: systemd did not answer; no Docker API"
    )
    assert (
        "— registered to myapp.service (payments-team);" in held_report(team="payments-team").line()
    )


def test_held_journal_fields() -> None:
    fields = held_report(team="payments-team").journal_fields()
    assert fields == {
        "MESSAGE": held_report(team="payments-team").line().removeprefix("portguard: "),
        "MESSAGE_ID": MESSAGE_ID[Verdict.HELD],
        "PRIORITY": "3",
        "SYSLOG_IDENTIFIER": "portguard",
        "PORTGUARD_VERDICT": "held",
        "OBJECT_SYSTEMD_UNIT": "myapp.service",
        "PORTGUARD_UNIT": "myapp.service",
        "PORTGUARD_PORT": "8080",
        "PORTGUARD_PROTO": "tcp",
        "PORTGUARD_ADDRESS": "0.0.0.0",
        "PORTGUARD_STATE": "LISTEN",
        "PORTGUARD_OWNER_KIND": "service",
        "PORTGUARD_OWNER_UNIT": "nginx.service",
        "PORTGUARD_OWNER_PID": "1312",
        "PORTGUARD_OWNER_COMM": "nginx",
        "PORTGUARD_OWNER_USER": "root",
        "PORTGUARD_REGISTERED_UNIT": "myapp.service",
        "PORTGUARD_REGISTERED_OWNER": "payments-team",
        "PORTGUARD_REMEDY": held_report().remedy,
    }


def test_container_owner_fields() -> None:
    fields = held_report(OWNERS[5]).journal_fields()
    assert fields["PORTGUARD_OWNER_KIND"] == "container"
    assert fields["PORTGUARD_OWNER_CONTAINER"] == "3f2a9c0b1d2e (web)"
    assert fields["PORTGUARD_OWNER_UNIT"] == "docker.service"
    assert "'docker stop web'" in fields["PORTGUARD_REMEDY"]


def test_session_owner_fields() -> None:
    fields = held_report(OWNERS[3]).journal_fields()
    assert fields["PORTGUARD_OWNER_KIND"] == "session"
    assert fields["PORTGUARD_OWNER_USER"] == "alice"
    assert "loginctl session-status 3" in fields["PORTGUARD_REMEDY"]


@pytest.mark.parametrize(
    ("report", "present", "priority"),
    [
        (Report(Verdict.RELEASED, "myapp.service", "was held; free after 250ms", port=8080,
                proto="tcp", address="0.0.0.0", owner=OWNERS[6], waited_ms=250),
         {"PORTGUARD_WAITED_MS": "250", "PORTGUARD_OWNER_KIND": "self"}, "6"),
        (Report(Verdict.DRAIN_TIMEOUT, "myapp.service", "still held", "raise 'wait'", port=8080,
                proto="tcp", state="TIME-WAIT", owner=OWNERS[7], waited_ms=10_000),
         {"PORTGUARD_WAITED_MS": "10000", "PORTGUARD_STATE": "TIME-WAIT",
          "PORTGUARD_OWNER_KIND": "time-wait"}, "3"),
        (Report(Verdict.UNASSIGNABLE, "myapp.service", "not here", "bring it up", port=8080,
                proto="tcp", address="192.0.2.10"),
         {"PORTGUARD_ADDRESS": "192.0.2.10", "PORTGUARD_REMEDY": "bring it up"}, "3"),
        (Report(Verdict.DENIED, "myapp.service", "denied", "use a port above 1023", port=80,
                proto="tcp"),
         {"PORTGUARD_PORT": "80"}, "3"),
        (Report(Verdict.UNREGISTERED, "other.service", "no claims", "add it"),
         {"PORTGUARD_UNIT": "other.service"}, "5"),
        (Report(Verdict.CONFIG_ERROR, "myapp.service", "registry invalid", "fix the registry"),
         {"PORTGUARD_REMEDY": "fix the registry"}, "3"),
        (Report(Verdict.INTERNAL_ERROR, "myapp.service", "internal error: KeyError"),
         {"PORTGUARD_VERDICT": "internal-error"}, "3"),
    ],
    ids=lambda v: str(v.verdict) if isinstance(v, Report) else "",
)  # fmt: skip
def test_journal_fields_per_verdict(report: Report, present: dict[str, str], priority: str) -> None:
    fields = report.journal_fields()
    assert fields["PORTGUARD_VERDICT"] == str(report.verdict)
    assert fields["MESSAGE_ID"] == MESSAGE_ID[report.verdict]
    assert fields["PRIORITY"] == priority
    assert fields["MESSAGE"] == report.line().removeprefix("portguard: ")
    assert present.items() <= fields.items()
    # Absent when unknown: no empty values, and nothing the report does not know.
    assert all(value != "" for value in fields.values())
    if report.owner is None:
        assert not [k for k in fields if k.startswith("PORTGUARD_OWNER_")]
    if report.waited_ms is None:
        assert "PORTGUARD_WAITED_MS" not in fields
    if report.remedy is None:
        assert "PORTGUARD_REMEDY" not in fields
    if not report.gaps:
        assert "PORTGUARD_UNKNOWN" not in fields
    assert int(report.exit_code) == {
        Verdict.RELEASED: 0, Verdict.UNREGISTERED: 0, Verdict.UNASSIGNABLE: 68,
        Verdict.DRAIN_TIMEOUT: 75, Verdict.DENIED: 77, Verdict.CONFIG_ERROR: 78,
        Verdict.INTERNAL_ERROR: 70,
    }[report.verdict]  # fmt: skip


def test_minimal_report_has_only_the_required_fields() -> None:
    fields = Report(Verdict.HELD, None, "held").journal_fields()
    assert set(fields) == {"MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER",
                           "PORTGUARD_VERDICT"}  # fmt: skip


def test_owner_fields_unknown_to_the_owner_are_absent() -> None:
    fields = held_report(Owner(OwnerKind.UNKNOWN)).journal_fields()
    assert fields["PORTGUARD_OWNER_KIND"] == "unknown"
    for absent in ("UNIT", "PID", "COMM", "USER", "CONTAINER"):
        assert f"PORTGUARD_OWNER_{absent}" not in fields


def test_every_verdict_but_free_has_its_own_message_id() -> None:
    logged = [v for v in Verdict if v is not Verdict.FREE]
    assert set(MESSAGE_ID) == set(logged)
    assert len(set(MESSAGE_ID.values())) == len(logged)
    for message_id in MESSAGE_ID.values():
        assert re.fullmatch(r"[0-9a-f]{32}", message_id), message_id
    assert set(EXIT) == set(Verdict)


def test_exit_codes_follow_the_contract() -> None:
    assert {v: int(e) for v, e in EXIT.items()} == {
        Verdict.FREE: 0, Verdict.RELEASED: 0, Verdict.UNREGISTERED: 0,
        Verdict.UNASSIGNABLE: 68, Verdict.HELD: 69, Verdict.INTERNAL_ERROR: 70,
        Verdict.REDIRECTED: 69, Verdict.PARTLY_REDIRECTED: 0, Verdict.EXHAUSTED: 69,
        Verdict.DRAIN_TIMEOUT: 75, Verdict.DENIED: 77, Verdict.CONFIG_ERROR: 78,
    }  # fmt: skip
    assert Report(Verdict.HELD, None, "x").exit_code is Exit.UNAVAILABLE


def test_as_data_carries_the_fields_for_json() -> None:
    data = held_report().as_data()
    assert data["verdict"] == "held"
    assert data["owner_unit"] == "nginx.service"
    assert data["exit_code"] == 69
    assert data["message"] == held_report().line().removeprefix("portguard: ")
    assert data["gaps"] == []


@pytest.mark.parametrize("owner", OWNERS, ids=lambda o: f"{o.kind}-{o.unit}")
def test_remedies_never_advise_a_signal(owner: Owner) -> None:
    remedy = remedy_for(owner, unit="myapp.service", port=8080, proto="tcp")
    assert remedy
    assert not SIGNALLING.search(remedy), remedy
    report = held_report(owner, elapsed_ms=10_000)
    assert report.verdict in (Verdict.HELD, Verdict.DRAIN_TIMEOUT)
    assert not SIGNALLING.search(report.line())


def test_signalling_pattern_would_catch_advice_to_kill() -> None:
    """The remedy check above can fail: it catches the spellings it is meant to."""
    for advice in ("kill 1312", "pkill nginx", "killall nginx", "send SIGTERM", "fuser -k 80/tcp"):
        assert SIGNALLING.search(advice), advice
    assert not SIGNALLING.search("look at its shutdown (KillMode=, TimeoutStopSec=)")


@pytest.mark.parametrize(
    ("owner", "text"),
    [
        (NGINX, "nginx.service (pid 1312 nginx)"),
        (OWNERS[1], "socket unit myapp.socket (held by PID 1, which starts myapp.service)"),
        (OWNERS[3], "alice's login session session-3.scope (pid 5000 python3)"),
        (OWNERS[4], "alice's user service app.service (pid 5001 app)"),
        (OWNERS[5], "container 3f2a9c0b1d2e (web) via docker.service (pid 4000 docker-proxy)"),
        (OWNERS[6], "a leftover process of myapp.service itself (pid 900 myapp)"),
        (OWNERS[7], "connections in TIME-WAIT"),
        (OWNERS[8], "an unidentified process in cgroup /machine.slice/vm.scope"),
    ],
)
def test_describe_owner(owner: Owner, text: str) -> None:
    assert describe_owner(owner) == text


def test_unknown_holder_remedy_names_a_command_that_exists() -> None:
    from portguard.policy.owners import Owner, OwnerKind  # noqa: PLC0415
    from portguard.policy.report import remedy_for  # noqa: PLC0415

    tcp = remedy_for(Owner(OwnerKind.UNKNOWN), unit="a.service", port=8080, proto="tcp")
    udp = remedy_for(Owner(OwnerKind.UNKNOWN), unit="a.service", port=53, proto="udp")
    assert "ss -tanp sport = :8080" in tcp
    assert "ss -uanp sport = :53" in udp


def _connection(port: int, peer_port: int, state: str = "ESTAB") -> Occupant:
    return Occupant(Proto.TCP, state, ipaddress.ip_address("10.0.0.1"), port,
                    (ipaddress.ip_address("10.0.0.9"), peer_port), inode=1, uid=0,
                    cgroup_id=None, v6only=False, expires_ms=None)  # fmt: skip


def test_a_client_connection_from_the_ephemeral_range_is_told_apart() -> None:
    """Seen 4: the port came from ip_local_port_range to a connection to a server's port; an
    accepted connection (its peer's port is the ephemeral one) or a reserved port is not it."""
    ports = LocalPorts((32768, 60999), PortSet.parse("40000"))
    assert took_from_ephemeral_range(_connection(45000, 443), ports)
    assert took_from_ephemeral_range(_connection(45000, 443, "TIME-WAIT"), ports)
    assert not took_from_ephemeral_range(_connection(45000, 51000), ports)  # accepted
    assert not took_from_ephemeral_range(_connection(8080, 443), ports)  # not in the range
    assert not took_from_ephemeral_range(_connection(40000, 443), ports)  # reserved
    assert not took_from_ephemeral_range(_connection(45000, 443), None)
    remedy = client_remedy(Owner(OwnerKind.SERVICE, "curl-job.service"), _connection(45000, 443))
    assert remedy.startswith("a client connection of curl-job.service to 10.0.0.9:443 took 45000")
    assert "portguard reserve --apply" in remedy


def test_a_holder_outside_any_unit_is_named_with_its_connection_and_how_it_got_the_port() -> None:
    """Seen by the kernel differential: a client socket held by a plain process, which the
    guard (root) could name, was "an unknown holder" with only an `ss` command as the fix."""
    stray = Owner(OwnerKind.UNKNOWN, pid=4242, comm="nc", user="alice",
                  cgroup="/user.slice/user-1000.slice")  # fmt: skip
    plain = remedy_for(stray, unit="myapp.service", port=8080, proto="tcp")
    assert plain.startswith(
        "pid 4242 (nc), user alice runs outside any unit (cgroup /user.slice/user-1000.slice): "
        "end it through whoever started it"
    )
    assert "'ps -o pid,ppid,user,lstart,args -p 4242'" in plain
    assert not SIGNALLING.search(plain)
    local = LocalPorts((32768, 60999), PortSet())

    def verdict(occupant: Occupant) -> Report:
        port = occupant.port
        claim = Claim(Proto.TCP, port, port, ipaddress.ip_address("0.0.0.0"))
        attempt = Attempt(next(binds(claim)), Outcome.IN_USE)
        attribution = Attribution((Holding(occupant, stray),), local_ports=local)
        decided = decide(Guarded("myapp.service", (claim,), 0), [attempt], attribution,
                         elapsed_ms=0, deadline_ms=0)  # fmt: skip
        assert isinstance(decided, Report)
        return decided

    bound = verdict(_connection(8080, 443))  # outside the range: its program chose 8080
    assert bound.remedy is not None and bound.remedy.startswith(
        "a connection of an unidentified process in cgroup /user.slice/user-1000.slice (pid 4242"
        " nc) to 10.0.0.9:443 holds 8080, bound to it on purpose"
    )
    assert "'portguard reserve' would not have kept it off" in bound.remedy
    chosen = verdict(_connection(45000, 443))  # the kernel's ephemeral choice
    assert chosen.remedy is not None and "portguard reserve --apply" in chosen.remedy

"""`portguard check`'s core: which unit, its claims, the real effects, and the report.

The free path is freepath/check.py's; this is everything else: a busy port, the first run after
a registry change, an unregistered unit, a broken registry.
"""

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from portguard.commands.trusted import registry_at
from portguard.errors import ConfigError, PortguardError, UsageError
from portguard.freepath.binds import parse_bind_options
from portguard.freepath.check import own_unit
from portguard.freepath.trust import REGISTRY_DIR
from portguard.host import journal, probe
from portguard.host.cgroups import own_cgroup, unit_of
from portguard.host.occupants import Occupant
from portguard.host.processes import wait_for_exit
from portguard.host.units import FactsChild
from portguard.policy.guard import Effects, Guarded, check
from portguard.policy.owners import Attribution
from portguard.policy.report import Report, Verdict
from portguard.registry.claims import Claim, ClaimSyntaxError, Proto
from portguard.registry.unitname import unit_name_problem

if TYPE_CHECKING:
    from pathlib import Path

    from portguard.host.prefetch import Early
    from portguard.registry.entries import Registry

# What the stderr line adds when the structured entry could not be sent: the line is then all
# the journal has of the verdict, without its fields and MESSAGE_ID.
LOST = "the structured journal entry was lost"
# How long the first census waits for the child that began it before reading it here.
_EARLY_CENSUS_S = 2.0


def which_unit(explicit: str | None) -> str:
    """The unit named, or the one whose cgroup this process runs in (ExecStartPre=)."""
    if explicit is not None:
        problem = unit_name_problem(explicit)
        if problem:
            raise UsageError(f"'{explicit}' is not a unit name: {problem}")
        return explicit
    unit = own_unit()
    if unit is None:
        raise UsageError(
            "not running inside a service, so the unit is unknown",
            hint="name it: portguard check UNIT",
        )
    return unit


def guarded_for(registry: "Registry", unit: str) -> Guarded | None:
    found = registry.entry_for(unit)
    if found is None:
        return None
    entry, instance = found
    try:
        claims = tuple(listen.claim(instance) for listen in entry.listen)
    except ClaimSyntaxError as exc:
        raise ConfigError(f"{entry.location}: {unit}: {exc.message}") from None
    return Guarded(unit, claims, entry.wait_ms, entry.via, entry.owner)


def binder_of(bind_options: list[str]) -> probe.Binder:
    """Who the probe binds as, from the drop-in's options; UsageError when they are wrong."""
    try:
        identity, socket_options, dynamic = parse_bind_options(list(bind_options))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if identity not in (None, (0, True)) and os.geteuid() != 0:
        raise UsageError(
            "taking on the unit's identity (--user, --caps) needs root",
            hint="the guard's drop-in runs it as ExecStartPre=+",
        )
    return probe.Binder(identity, socket_options, dynamic)


def real_effects(
    self_cgroup: str | None,
    binder: probe.Binder | None = None,
    facts: FactsChild | None = None,
    early: "Early | None" = None,
) -> Effects:
    """The kernel, cgroups and systemd; with FACTS, systemd is asked by a child started as
    soon as a port turns out busy, which connects while the socket table is read; with
    EARLY, the first census is the one a child began before the policy was loaded."""

    def census(ports: Iterable[tuple[Proto, int]], *, listening: bool = False) -> list[Occupant]:
        if facts is not None:
            facts.start()
        ports = list(ports)
        # The census the child began, when it is of the same kind (listeners, or all).
        found = None
        if early is not None and early.listening is listening:
            found = early.census(ports, _EARLY_CENSUS_S)
        if found is not None:
            return found
        from portguard.host import sockets  # noqa: PLC0415

        return sockets.listening_census(ports) if listening else sockets.census(ports)

    def listening(ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
        return census(ports, listening=True)

    def attribute(occupants: list[Occupant], also: Sequence[str], timeout: float) -> Attribution:
        from portguard.commands.attribution import here  # noqa: PLC0415
        from portguard.policy.attribute import attribute as find_owners  # noqa: PLC0415

        context = here(self_cgroup=self_cgroup, facts_timeout=timeout)
        if facts is not None:
            context = replace(context, facts=facts)
        return find_owners(occupants, context, also)

    def trial(claims: Iterable[Claim]) -> list[probe.Attempt]:
        return probe.probe(claims, binder)

    def trial_pool(claim: Claim) -> list[probe.PoolFamily]:
        return probe.probe_pool(claim, binder)

    return Effects(trial, census, attribute, wait_for_exit, time.monotonic, trial_pool, listening)


def emit(report: Report, *, as_json: bool) -> int:
    """The journal entry and stderr line (none for `free`), and the exit code."""
    if report.verdict is not Verdict.FREE:
        unsent = journal.send(report.journal_fields())
        # The stderr line would be the same entry again in the unit's journal, unless the
        # native one may be lost: not sent (then the line says so), or sent by a non-root
        # guard, whose OBJECT_SYSTEMD_UNIT journald ignores (so a guard that exits before
        # journald reads its cgroup leaves an entry `journalctl -u` does not find; systemd
        # issue 2913).
        stream = journal.stderr_is_journal()
        if unsent is not None:
            # In the journal this line is then all there is of the verdict: say so there.
            lost = f" [{LOST} ({unsent})]" if stream else ""
            print(f"{report.line()}{lost}", file=sys.stderr)
        elif not (os.geteuid() == 0 and stream):
            print(report.line(), file=sys.stderr)
    if as_json:
        print(json.dumps(report.as_data(), indent=2))
    return int(report.exit_code)


def run(
    unit_arg: str | None,
    registry: "str | Path | None",
    *,
    as_json: bool,
    debug: bool,
    bind_options: list[str] | None = None,
    early: "Early | None" = None,
) -> int:
    unit = which_unit(unit_arg)
    binder = binder_of(bind_options or [])
    registry_path = registry or REGISTRY_DIR
    try:
        return emit(_decide(unit, registry_path, binder, early), as_json=as_json)
    except ConfigError as exc:
        summary = exc.message + (f" ({exc.hint})" if exc.hint else "")
        report = Report(Verdict.CONFIG_ERROR, unit, summary, "fix the registry, then start again")
        return emit(report, as_json=as_json)
    except PortguardError:
        raise
    except Exception as exc:  # still logged structurally, as the contract asks
        if debug:
            import traceback  # noqa: PLC0415 - only for --debug: it costs ~14 ms to load

            traceback.print_exc()
        summary = f"internal error: {type(exc).__name__}: {exc}"
        report = Report(Verdict.INTERNAL_ERROR, unit, summary, "a portguard bug: please report it")
        return emit(report, as_json=as_json)


def _decide(
    unit: str, registry_path: "str | Path", binder: probe.Binder, early: "Early | None" = None
) -> Report:
    registry = registry_at(registry_path)
    guarded = guarded_for(registry, unit)
    if guarded is None:
        return Report(
            Verdict.UNREGISTERED,
            unit,
            f"{unit} has no claims in the registry, so there is nothing to check",
            f"add {unit} to the registry, or remove its portguard drop-in",
        )
    unjudged: tuple[Claim, ...] = ()
    if binder.dynamic:
        # DynamicUser=: systemd picks the uid at start, and SO_REUSEPORT shares a port only
        # between sockets of one uid, so whether a reuseport claim is free cannot be told.
        unjudged = tuple(c for c in guarded.claims if c.reuseport)
        guarded = replace(guarded, claims=tuple(c for c in guarded.claims if not c.reuseport))
    own = own_cgroup()
    self_cgroup = own if own and unit_of(own) == unit else None
    uid = binder.identity[0] if binder.identity else os.geteuid()
    with early.facts if early is not None else FactsChild() as facts:
        effects = real_effects(self_cgroup, binder, facts, early)
        report = check(replace(guarded, uid=uid), effects)
    if report.verdict not in (Verdict.FREE, Verdict.RELEASED):
        return report  # held wins over redirected: the bind itself fails
    if unjudged:
        _say_unjudged(unit, unjudged)
    return _traffic(report, registry, guarded, registry_path)


def _say_unjudged(unit: str, claims: tuple[Claim, ...]) -> None:
    """A notice in the unit's journal, once per boot, of the claims a DynamicUser= unit's
    guard does not judge; never a failed start."""
    from portguard.commands.redirects import first_this_boot  # noqa: PLC0415

    if not first_this_boot(unit, "dynamic"):
        return
    shown = ", ".join(str(c) for c in claims)
    journal.send({
        "MESSAGE": f"{shown} of {unit} not judged: it sets reuseport, and SO_REUSEPORT shares "
        "a port only between sockets of one uid, which DynamicUser= picks at start",
        "PRIORITY": "5", "SYSLOG_IDENTIFIER": "portguard", "OBJECT_SYSTEMD_UNIT": unit,
        "PORTGUARD_UNIT": unit, "PORTGUARD_UNKNOWN": f"whether {shown} is free for its uid",
    })  # fmt: skip


def _traffic(report: Report, registry: "Registry", guarded: Guarded, root: "str | Path") -> Report:
    """A port free for bind() may still have its traffic taken by NAT (DESIGN rule 5)."""
    from portguard.commands import redirects  # noqa: PLC0415
    from portguard.freepath.trust import digest  # noqa: PLC0415

    own = {(c.proto, p) for c in guarded.claims for p in c.ports}
    for via in guarded.via:
        found = registry.entry_for(via)
        if found is not None:
            entry, instance = found
            with contextlib.suppress(ClaimSyntaxError):
                own |= {
                    (c.proto, p)
                    for ls in entry.listen
                    for c in [ls.claim(instance)]
                    for p in c.ports
                }
    ruleset = redirects.ruleset_here()
    # A pool is not asked: a redirected port of it is one the service skips (DESIGN rule 6).
    bound = tuple(c for c in guarded.claims if c.pool is None)
    judged = redirects.look(bound, unit=guarded.unit, own=own, ruleset=ruleset)
    key = digest(str(root))
    redirects.remember(ruleset, guarded.unit, key[0] if key else None, judged)
    judged_report = redirects.verdict(report, judged)
    unjudged = judged.gaps and judged_report.verdict is report.verdict
    if unjudged and report.verdict is Verdict.FREE and redirects.first_this_boot(guarded.unit):
        # Not a failed start, never: a notice, once per boot, of what could not be judged.
        fields = judged_report.journal_fields() | {"PRIORITY": "5"}
        journal.send(fields)
    return judged_report

"""The journal catalog (systemd/portguard.catalog): one entry per MESSAGE_ID, each substituting
only fields its verdict always carries, in a form journalctl compiles."""

import ipaddress
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from portguard.commands import check
from portguard.host.occupants import Occupant
from portguard.host.probe import Outcome
from portguard.policy.guard import Guarded
from portguard.policy.owners import Owner, OwnerKind
from portguard.policy.report import MESSAGE_ID, Report, Verdict
from portguard.registry.claims import Claim, Proto
from portguard.registry.entries import Registry
from tests.conftest import shipped
from tests.policy.test_guard import (
    ANY_V4,
    PORT,
    SELF,
    SERVICE,
    SOCKET,
    TIME_WAIT,
    UNIT,
    World,
    guarded,
    held_by,
    time_wait,
)

CATALOG = shipped("systemd/portguard.catalog", "/usr/lib/systemd/catalog/portguard.catalog")
REQUIRED_HEADERS = ("Subject", "Defined-By", "Documentation")
# catalog.c: a line starting with one of these is a comment, wherever it is.
COMMENT_STARTS = ("#", ";")
_ID_LINE = re.compile(r"^-- ([0-9a-f]{32})$")
# replace-var.c: what may stand between two @ to be a field name.
_FIELD = re.compile(r"@([A-Z0-9_]+)@")
_HEADER = re.compile(r"^([A-Za-z-]+): (.+)$")
# Advice to signal a process, in any spelling; `KillMode=` names a unit setting, not advice.
_SIGNALLING = re.compile(r"\b((?i:p?kill(all)?)|SIG[A-Z]{3,}|(?i:fuser\s+-k))\b")


@dataclass(frozen=True)
class Entry:
    message_id: str
    line: int
    payload: str  # the headers, a blank line, the text: what journalctl stores

    @property
    def headers(self) -> dict[str, str]:
        head = self.payload.split("\n\n", 1)[0]
        found = {}
        for raw in head.splitlines():
            match = _HEADER.match(raw)
            assert match, f"line {self.line}: not a 'Header: value' line: {raw!r}"
            found[match.group(1)] = match.group(2)
        return found

    @property
    def text(self) -> str:
        return self.payload.split("\n\n", 1)[1] if "\n\n" in self.payload else ""

    @property
    def fields(self) -> set[str]:
        return set(_FIELD.findall(self.payload))


def parse(source: str) -> list[Entry]:
    """The catalog as systemd's catalog_import_file() reads it (a strict subset: no languages)."""
    entries: list[Entry] = []
    current: tuple[str, int] | None = None
    lines: list[str] = []
    blank_before = True

    def finish() -> None:
        if current is not None:
            payload = "\n".join(lines).strip("\n") + "\n"
            assert payload.strip(), f"line {current[1]}: entry {current[0]} has no text"
            entries.append(Entry(current[0], current[1], payload))

    for number, raw in enumerate(source.splitlines(), 1):
        if not raw:
            blank_before = True
            if current is not None:
                lines.append("")
            continue
        if raw.startswith(COMMENT_STARTS):
            continue
        match = _ID_LINE.match(raw)
        if blank_before and match:
            finish()
            current, lines, blank_before = (match.group(1), number), [], False
            continue
        assert not raw.startswith("--"), f"line {number}: not an entry header: {raw!r}"
        assert current is not None, f"line {number}: text before the first entry"
        lines.append(raw)
        blank_before = False
    finish()
    return entries


def render(entry: Entry, fields: dict[str, str]) -> str:
    """The entry as `journalctl -x` fills it in: a field it lacks shows as its bare name."""
    return _FIELD.sub(lambda m: fields.get(m.group(1), m.group(1)), entry.payload)


ENTRIES = parse(CATALOG.read_text(encoding="utf-8"))
BY_ID = {e.message_id: e for e in ENTRIES}


def entry_for(verdict: Verdict) -> Entry:
    return BY_ID[MESSAGE_ID[verdict]]


# --- the reports each verdict can produce, through the code that builds them -------------------

NO_REUSE = Claim(Proto.TCP, PORT, PORT, ANY_V4, reuseaddr=False)
VIP = Claim(Proto.TCP, PORT, PORT, ipaddress.ip_address("192.0.2.10"))


def _guard_reports() -> list[Report]:
    """What guard.check() says in every shape the policy tests know, sparse ones included."""
    hidden_self = Owner(OwnerKind.SELF, UNIT)  # a leftover whose processes could not be listed
    cases: list[tuple[World, Guarded]] = [
        (World(holdings=held_by(SERVICE)), guarded(team="payments-team")),
        (World(holdings=held_by(SOCKET)), guarded()),
        (World(), guarded()),  # busy, but no socket found: held by an unknown holder
        (World(census_error=OSError("no sock_diag")), guarded()),
        (World(holdings=held_by(SELF)), guarded(wait_ms=2_000)),
        (World(holdings=held_by(TIME_WAIT, time_wait(30_000))), guarded(NO_REUSE)),
        (World(holdings=held_by(SELF), busy_until=0.25, exits_at=0.25), guarded()),
        (World(holdings=held_by(hidden_self), busy_until=0.5), guarded()),
        (World(holdings=held_by(TIME_WAIT, time_wait(3_000)), busy_until=3.0), guarded(NO_REUSE)),
        (World(outcome=Outcome.UNASSIGNABLE), guarded(VIP)),
        (World(outcome=Outcome.DENIED), guarded(Claim(Proto.TCP, 80, 80))),
        (World(outcome=Outcome.DENIED), guarded()),
    ]
    return [world.check(subject) for world, subject in cases]


def _redirect_reports() -> list[Report]:
    """`redirected` and `partly-redirected` from the pure judgement, on built rulesets."""
    from portguard.commands.redirects import verdict  # noqa: PLC0415
    from portguard.policy.redirects import judge  # noqa: PLC0415
    from tests.policy import nat_rules as n  # noqa: PLC0415

    free = Report(Verdict.FREE, UNIT, f"{PORT}/tcp free")
    claim = Claim(Proto.TCP, PORT, PORT)
    shapes = [
        n.ruleset({"pre": [n.dport(PORT) + n.dnat(n.POD, 80)]}),
        n.ruleset({"pre": [n.dport(PORT) + n.redirect(9000)]}),
        n.ruleset({"pre": [n.saddr_in(b"\x0a\0\0\0", 8) + n.dport(PORT) + n.dnat(n.POD, 80)]}),
    ]
    return [verdict(free, judge(rules, [claim], n.HERE, unit=UNIT)) for rules in shapes]


def _pool_reports() -> list[Report]:
    """`exhausted` with its first holder named, and with none found in the census."""
    from tests.policy.test_pools import STRANGER, Kernel  # noqa: PLC0415

    class Unseen(Kernel):
        def census(self, ports: Iterable[tuple[Proto, int]]) -> list[Occupant]:
            super().census(ports)
            return []

    taken = dict.fromkeys(range(49152, 49162), STRANGER)
    return [Kernel(dict(taken)).check(), Unseen(dict(taken)).check()]


def _check_run_fields(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, load: Callable[[Path], Registry] | None
) -> dict[str, str]:
    """The journal fields `portguard check myapp.service` sends, with LOAD as the registry."""
    sent: list[dict[str, str]] = []
    monkeypatch.setattr("portguard.host.journal.send", sent.append)
    registry = tmp_path
    if load is None:
        registry = tmp_path / "missing"
    else:
        monkeypatch.setattr(check, "registry_at", load)
    check.run(UNIT, registry, as_json=False, debug=False)
    assert len(sent) == 1, sent
    return sent[0]


def _broken(path: Path) -> Registry:
    raise RuntimeError("a bug")


@pytest.fixture
def fields_by_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[Verdict, list[dict[str, str]]]:
    found: dict[Verdict, list[dict[str, str]]] = {}
    for report in _guard_reports():
        found.setdefault(report.verdict, []).append(report.journal_fields())
    for report in [*_redirect_reports(), *_pool_reports()]:
        found.setdefault(report.verdict, []).append(report.journal_fields())
    for load in (None, lambda _: Registry(), _broken):
        fields = _check_run_fields(monkeypatch, tmp_path, load)
        found.setdefault(Verdict(fields["PORTGUARD_VERDICT"]), []).append(fields)
    return found


# --- tests --------------------------------------------------------------------------------------


def test_one_entry_per_message_id_and_no_other() -> None:
    counts = Counter(e.message_id for e in ENTRIES)
    assert [i for i, n in counts.items() if n > 1] == []  # journalctl would merge them silently
    assert set(counts) == set(MESSAGE_ID.values())


def test_every_entry_has_the_required_headers() -> None:
    for entry in ENTRIES:
        headers = entry.headers
        missing = [h for h in REQUIRED_HEADERS if h not in headers]
        assert missing == [], (entry.message_id, missing)
        assert headers["Defined-By"] == "portguard"
        assert "man:portguard(8)" in headers["Documentation"].split()
        assert entry.text.strip(), entry.message_id


def test_every_entry_says_what_to_do_and_never_to_signal() -> None:
    for entry in ENTRIES:
        assert "What to do" in entry.text or "Nothing to do" in entry.text, entry.message_id
        advice = entry.headers["Subject"] + "\n" + entry.text  # Documentation may cite kill(5)
        assert _SIGNALLING.search(advice) is None, entry.message_id


def test_fields_used_are_ones_the_verdict_always_carries(
    fields_by_verdict: dict[Verdict, list[dict[str, str]]],
) -> None:
    assert set(fields_by_verdict) >= set(MESSAGE_ID), "a verdict with no report to compare"
    for verdict in MESSAGE_ID:
        always = set.intersection(*(set(f) for f in fields_by_verdict[verdict]))
        used = entry_for(verdict).fields
        assert used, verdict  # every entry says which unit, at least
        assert used <= always, (verdict, sorted(used - always))


def test_held_entry_filled_in_names_the_port_unit_and_fix() -> None:
    report = World(holdings=held_by(SERVICE)).check(guarded())
    text = render(entry_for(Verdict.HELD), report.journal_fields())
    assert "PORTGUARD_" not in text
    assert f"{UNIT} not started: port {PORT}/tcp is held by another owner" in text
    assert "systemctl stop nginx.service" in text  # the remedy, naming the holder
    assert f"portguard why {PORT}/tcp" in text


def test_parse_rejects_what_journalctl_rejects() -> None:
    with pytest.raises(AssertionError, match="text before the first entry"):
        parse("Subject: x\n")
    with pytest.raises(AssertionError, match="no text"):
        parse("-- " + "0" * 32 + "\n\n-- " + "1" * 32 + "\nSubject: y\n\ntext\n")


def _journalctl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    return subprocess.run(["journalctl", "--root", str(root), *args], capture_output=True,
                          text=True, env=env, timeout=30, check=False)  # fmt: skip


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="needs journalctl (systemd)")
def test_journalctl_compiles_it_into_the_same_entries(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir / "portguard.catalog")

    updated = _journalctl(tmp_path, "--update-catalog")
    assert (updated.returncode, updated.stderr) == (0, "")
    assert (tmp_path / "var/lib/systemd/catalog/database").is_file()

    listed = _journalctl(tmp_path, "--list-catalog").stdout.splitlines()
    expected = [f"{e.message_id} portguard: {e.headers['Subject']}" for e in ENTRIES]
    assert sorted(listed) == sorted(expected)

    for entry in ENTRIES:
        dumped = _journalctl(tmp_path, "--dump-catalog", entry.message_id).stdout
        assert dumped == f"-- {entry.message_id}\n{entry.payload}\n", entry.message_id

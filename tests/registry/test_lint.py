"""check_registry: the rules in tests/data/rules, kernel overlap rules, ephemeral ports."""

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portguard.registry.claims import overlaps, shares
from portguard.registry.entries import RegistrySource
from portguard.registry.findings import Severity
from portguard.registry.lint import check_registry
from portguard.registry.localports import LocalPorts, PortSet
from portguard.registry.model import load
from tests import pathological
from tests.conftest import (
    BAD_RULE_FILES,
    DEFAULT_LOCAL_PORTS,
    DESIGN_EXAMPLE,
    GOOD_RULE_FILES,
    Registry,
    describe,
    expectations,
    only,
)

# --- the rule catalogue: one bad file per rule and variant, and good files -----------------


def test_the_catalogue_covers_every_rule() -> None:
    rules = {e.rule for path in BAD_RULE_FILES for e in expectations(path)}
    assert rules >= {
        "yaml",
        "encoding",
        "type",
        "version",
        "unknown-key",
        "duplicate-key",
        "merge-key",
        "missing-key",
        "timespan",
        "listen",
        "unit-name",
        "overlap",
        "overlap-self",
        "overlap-limit",
        "share",
    }
    assert all(expectations(path) for path in BAD_RULE_FILES), "a bad file without '# expect:'"


@pytest.mark.parametrize("path", BAD_RULE_FILES, ids=lambda p: p.stem)
def test_bad_file_gives_exactly_the_expected_findings(path: Path) -> None:
    findings = check_registry(load(RegistrySource(path)), DEFAULT_LOCAL_PORTS)
    expected = expectations(path)
    assert len(findings) == len(expected), describe(findings)
    for want in expected:
        assert any(want.matches(f, path) for f in findings), f"{want}\n{describe(findings)}"


@pytest.mark.parametrize("path", GOOD_RULE_FILES, ids=lambda p: p.stem)
def test_good_file_gives_no_findings(path: Path) -> None:
    loaded = load(RegistrySource(path))
    assert check_registry(loaded, DEFAULT_LOCAL_PORTS) == (), describe(loaded.findings)


def test_design_example_is_read_as_documented() -> None:
    registry = load(RegistrySource(DESIGN_EXAMPLE)).registry
    assert list(registry.units) == ["myapp.service", "nginx.service", "redis@.service"]
    myapp = registry.units["myapp.service"]
    assert [str(listen.claim()) for listen in myapp.listen] == [
        "8080/tcp",
        "127.0.0.1:9090/tcp",
        "[::1]:9090/tcp",
        "5353/udp",
    ]
    assert myapp.owner == "payments-team"
    assert registry.units["nginx.service"].via == ("nginx.socket",)
    assert str(registry.units["redis@.service"].listen[0].claim("6379")) == "6379/tcp"


# --- overlaps by the kernel's rules --------------------------------------------------------

V6ONLY_ANY = '{port: "[::]:80/tcp", v6only: true}'

OVERLAP_MATRIX = [
    # (first unit's listen entry, second unit's, do they collide)
    ("8080/tcp", "127.0.0.1:8080/tcp", True),  # wildcard vs a specific IPv4 address
    ("8080/tcp", '"[::1]:8080/tcp"', True),  # wildcard vs a specific IPv6 address
    ("8080", "8080/tcp", True),  # bare PORT is TCP
    ("0.0.0.0:80/tcp", '"[::]:80/tcp"', True),  # dual-stack [::] takes IPv4's wildcard
    ("0.0.0.0:80/tcp", V6ONLY_ANY, False),  # ... unless v6only
    ("127.0.0.1:80/tcp", '"[::]:80/tcp"', True),
    ("127.0.0.1:80/tcp", V6ONLY_ANY, False),
    ('"[::1]:80/tcp"', V6ONLY_ANY, True),
    ('"[::1]:80/tcp"', "127.0.0.1:80/tcp", False),  # IPv6 loopback is not IPv4's
    ("0.0.0.0:80/tcp", '"[::1]:80/tcp"', False),
    ('"[::ffff:127.0.0.1]:80/tcp"', "127.0.0.1:80/tcp", True),  # v4-mapped is IPv4
    # ([::ffff:127.0.0.1] with v6only can never be bound: the `listen` rule refuses it.)
    ('"[::ffff:0.0.0.0]:80/tcp"', "10.0.0.1:80/tcp", True),  # mapped any is IPv4's wildcard
    ("127.0.0.1:80/tcp", "127.0.0.1:80/tcp", True),
    ("127.0.0.1:80/tcp", "127.0.0.2:80/tcp", False),
    ("0.0.0.0:80/tcp", "127.0.0.1:80/tcp", True),
    ("80/tcp", "80/udp", False),  # protocols have separate port spaces
    ("8080/tcp", "8081/tcp", False),
    ("9000-9010/tcp", "9010/tcp", True),  # a range's last port
    ("9000-9010/tcp", "9005-9020/tcp", True),  # intersecting ranges
    ("9000-9010/tcp", "9011-9020/tcp", False),  # adjacent ranges share no port
    ("9000-9100/udp", "127.0.0.1:9050/udp", True),
    ("9000-9100/tcp", "9050/udp", False),
]


@pytest.mark.parametrize("swap", [False, True], ids=["in-order", "swapped"])
@pytest.mark.parametrize(("left", "right", "collide"), OVERLAP_MATRIX)
def test_overlap_matrix(reg: Registry, left: str, right: str, collide: bool, swap: bool) -> None:
    if swap:
        left, right = right, left
    findings = reg.lint_text(
        f"""
        version: 1
        units:
          a.service:
            listen: [{left}]
          b.service:
            listen: [{right}]
        """
    )
    if not collide:
        assert findings == (), describe(findings)
        return
    finding = only(findings)
    assert (finding.rule, finding.severity) == ("overlap", Severity.ERROR)
    # Reported at the later claim (line 6), naming the earlier one's unit and place (line 4).
    path = reg.root / "registry.yaml"
    assert str(finding.location) == f"{path}:6:{_column(right)}"
    assert finding.message.startswith("b.service claims ")
    assert f" claimed by a.service at {path}:4:{_column(left)} " in finding.message


def _column(entry: str) -> int:
    """Where lint points for ENTRY written as `    listen: [ENTRY]`: at the port text."""
    column = len("    listen: [") + 1
    if entry.startswith("{port: "):
        column += len("{port: ")
        entry = entry[len("{port: ") :]
    return column + (1 if entry.startswith('"') else 0)


def test_overlap_names_both_places(reg: Registry) -> None:
    reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          web.service:
            listen:
              - 8080/tcp
          admin.service:
            listen:
              - "127.0.0.1:8080/tcp"
        """,
    )
    finding = only(reg.lint("registry.yaml"))
    assert finding.rule == "overlap"
    assert (finding.location.line, finding.location.column) == reg.at(
        "registry.yaml", "127.0.0.1:8080/tcp"
    )
    assert finding.message == (
        f"admin.service claims 127.0.0.1:8080/tcp, which overlaps 8080/tcp claimed by "
        f"web.service at {reg.where('registry.yaml', '8080/tcp')} (give one of them another "
        "port, or list one in the other's 'via')"
    )


def test_overlap_across_files_is_reported_in_the_later_file(reg: Registry) -> None:
    reg.write("registry.yaml", "version: 1\nunits:\n  web.service:\n    listen: [8080/tcp]\n")
    reg.write(
        "registry.d/50-api.yaml",
        "version: 1\nunits:\n  api.service:\n    listen: ['[::]:8080/tcp']\n",
    )
    findings = check_registry(load(RegistrySource.installed(reg.root)), DEFAULT_LOCAL_PORTS)
    finding = only(findings)
    assert finding.rule == "overlap"
    assert finding.location.path == str(reg.root / "registry.d/50-api.yaml")
    assert (finding.location.line, finding.location.column) == (4, 15)  # inside the quotes
    assert f"claimed by web.service at {reg.root / 'registry.yaml'}:4:14" in finding.message


def test_overlap_between_two_dropins(reg: Registry) -> None:
    reg.write("registry.yaml", "version: 1\n")
    reg.write("registry.d/10-a.yaml", "version: 1\nunits:\n  a.service:\n    listen: [53/udp]\n")
    reg.write(
        "registry.d/20-b.yaml",
        "version: 1\nunits:\n  b.service:\n    listen:\n      - 127.0.0.53:53/udp\n",
    )
    finding = only(check_registry(load(RegistrySource.installed(reg.root)), None))
    assert str(finding.location) == f"{reg.root / 'registry.d/20-b.yaml'}:5:9"
    assert f"a.service at {reg.root / 'registry.d/10-a.yaml'}:4:14" in finding.message


def test_claims_joined_by_overlaps_are_one_finding_naming_each(reg: Registry) -> None:
    findings = reg.lint_text(
        """
        version: 1
        units:
          a.service: {listen: [8080/tcp]}
          b.service: {listen: [127.0.0.1:8080/tcp]}
          c.service: {listen: [0.0.0.0:8080/tcp]}
          d.service: {listen: [8080/udp]}
        """
    )
    finding = only(findings)
    assert (finding.rule, finding.severity) == ("overlap", Severity.ERROR)
    claims = {"a": "8080/tcp", "b": "127.0.0.1:8080/tcp", "c": "0.0.0.0:8080/tcp"}
    where = {unit: reg.where("registry.yaml", claim) for unit, claim in claims.items()}
    assert str(finding.location) == where["b"]
    assert finding.message == (
        f"3 claims of 3 units overlap, each with one at least: a.service's 8080/tcp at "
        f"{where['a']}, b.service's 127.0.0.1:8080/tcp at {where['b']}, c.service's "
        f"0.0.0.0:8080/tcp at {where['c']} (give them distinct ports, or list the one that "
        "holds a port for another in its 'via')"
    )
    assert [(m.unit, m.claim) for m in finding.members] == [
        ("a.service", "8080/tcp"),
        ("b.service", "127.0.0.1:8080/tcp"),
        ("c.service", "0.0.0.0:8080/tcp"),
    ]


def test_overlap_is_not_transitive_and_a_wildcard_joins_groups(reg: Registry) -> None:
    """127.0.0.1 and 10.0.0.1 do not collide: two groups on one port, until a wildcard
    overlaps both."""
    two_pairs = (
        "version: 1\nunits:\n"
        "  a.service: {listen: [127.0.0.1:8080/tcp]}\n"
        "  b.service: {listen: [127.0.0.1:8080/tcp]}\n"
        "  c.service: {listen: [10.0.0.1:8080/tcp]}\n"
        "  d.service: {listen: [10.0.0.1:8080/tcp]}\n"
    )
    findings = reg.lint_text(two_pairs)
    assert [[m.unit for m in f.members] for f in findings] == [
        ["a.service", "b.service"], ["c.service", "d.service"],
    ]  # fmt: skip
    joined = reg.lint_text(two_pairs + "  e.service: {listen: [8080/tcp]}\n")
    assert [m.unit for m in only(joined).members] == [f"{u}.service" for u in "abcde"]


@pytest.mark.parametrize("holder", ["a", "b"])
def test_via_in_either_direction_suppresses_the_overlap(reg: Registry, holder: str) -> None:
    other = {"a": "b", "b": "a"}[holder]
    units = {
        holder: f"{holder}.service: {{listen: [80/tcp], via: [{other}.socket]}}",
        other: f"{other}.socket: {{listen: [80/tcp]}}",
    }
    findings = reg.lint_text(f"version: 1\nunits:\n  {units['a']}\n  {units['b']}\n")
    assert findings == (), describe(findings)


def test_via_naming_a_third_unit_does_not_suppress(reg: Registry) -> None:
    findings = reg.lint_text(
        """
        version: 1
        units:
          nginx.service: {listen: [80/tcp], via: [nginx.socket]}
          apache2.service: {listen: [80/tcp]}
        """
    )
    assert only(findings).rule == "overlap"


def test_same_unit_overlap_is_a_warning(reg: Registry) -> None:
    findings = reg.lint_text(
        """
        version: 1
        units:
          web.service:
            listen:
              - 8080/tcp
              - 127.0.0.1:8080/tcp
        """
    )
    finding = only(findings)
    assert (finding.severity, finding.rule) == (Severity.WARNING, "overlap-self")
    assert (finding.location.line, finding.location.column) == (6, 9)
    assert "overlaps web.service's own 8080/tcp at" in finding.message
    assert "EADDRINUSE" in finding.message


def test_template_port_claims_are_skipped_but_fixed_ports_of_templates_count(
    reg: Registry,
) -> None:
    findings = reg.lint_text(
        """
        version: 1
        units:
          redis@.service:
            listen: ["%i/tcp", 127.0.0.1:9999/tcp]
          other.service:
            listen: [6379/tcp, 9999/tcp]
        """
    )
    finding = only(findings)
    assert finding.rule == "overlap"
    assert "other.service claims 9999/tcp" in finding.message
    assert "redis@.service" in finding.message


def test_duplicate_unit_across_files(reg: Registry) -> None:
    reg.write("registry.yaml", "version: 1\nunits:\n  web.service:\n    listen: [80/tcp]\n")
    reg.write(
        "registry.d/web.yaml",
        "version: 1\nunits:\n  # moved here?\n  web.service:\n    listen: [8080/tcp]\n",
    )
    findings = check_registry(load(RegistrySource.installed(reg.root)), DEFAULT_LOCAL_PORTS)
    finding = only(findings)
    assert (finding.severity, finding.rule) == (Severity.ERROR, "duplicate-unit")
    assert str(finding.location) == f"{reg.root / 'registry.d/web.yaml'}:4:3"
    assert finding.message == f"web.service is already defined at {reg.root / 'registry.yaml'}:3:3"


def test_findings_are_sorted_by_reading_order(reg: Registry) -> None:
    reg.write("registry.yaml", "version: 1\nunits:\n  b.service: {listen: [1/tcp, 0/tcp]}\n")
    reg.write("registry.d/a.yaml", "version: 2\n")
    findings = check_registry(load(RegistrySource.installed(reg.root)), None)
    assert [f.location.path for f in findings] == [
        str(reg.root / "registry.yaml"),
        str(reg.root / "registry.d/a.yaml"),
    ]


# --- ephemeral ports -----------------------------------------------------------------------


def test_claims_in_the_ephemeral_range_warn_unless_reserved(reg: Registry) -> None:
    reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          app.service:
            listen:
              - 40000/tcp
              - 40001/udp
              - 32760-32770/tcp
              - 61000/tcp
              - 8080/tcp
          pool@.service:
            listen: ["%i/tcp"]
        """,
    )
    local = LocalPorts((32768, 60999), PortSet.parse("40000,32769"))
    findings = reg.lint("registry.yaml", local_ports=local)
    assert all(f.severity is Severity.WARNING and f.rule == "ephemeral" for f in findings)
    assert [(f.location.line, f.location.column) for f in findings] == [(6, 9), (7, 9)]
    assert findings[0].message.startswith(
        "app.service: port 40001 of 40001/udp is in the ephemeral range 32768-60999 "
        "(net.ipv4.ip_local_port_range) but not in net.ipv4.ip_local_reserved_ports"
    )
    assert "port 32768,32770 of 32760-32770/tcp" in findings[1].message
    assert "('portguard reserve --apply' adds 32768,32770 to it;" in findings[1].message


def test_no_ephemeral_warning_without_kernel_settings(reg: Registry) -> None:
    text = "version: 1\nunits:\n  app.service: {listen: [40000/tcp]}\n"
    assert reg.lint_text(text, local_ports=None) == ()
    assert only(reg.lint_text(text)).rule == "ephemeral"


def test_fully_reserved_range_does_not_warn(reg: Registry) -> None:
    local = LocalPorts((32768, 60999), PortSet.parse("39990-40010"))
    text = "version: 1\nunits:\n  app.service: {listen: [40000-40010/tcp]}\n"
    assert reg.lint_text(text, local_ports=local) == ()


POOLS = """\
version: 1
units:
  coturn.service:
    listen: [3478/udp, {port: 49152-65535/udp, pool: true}]
  rtp.service:
    listen: [{port: 40000-47000/udp, pool: true}]
"""


def test_reservations_over_half_the_ephemeral_range_warn_at_the_widest_claim(
    reg: Registry,
) -> None:
    findings = reg.lint_text(POOLS)
    shares = [f for f in findings if f.rule == "ephemeral-share"]
    assert [(f.severity, f.location.line, f.location.column) for f in shares] == [
        (Severity.WARNING, 4, 31)
    ]
    assert shares[0].message == (
        "the reserved ports would take 18,849 of the 28,232 ports of the ephemeral range "
        "32768-60999 (66%), leaving outgoing connections fewer than half: narrow the widest "
        "pool or range (e.g. coturn's min-port/max-port), or move net.ipv4.ip_local_port_range "
        "away from it (the widest: coturn.service's 49152-65535/udp)"
    )
    # coturn's default pool alone is 42% of the default range: a pool, unreserved, is still
    # an `ephemeral` warning, but not crowding.
    alone = reg.lint_text(POOLS.split("  rtp.service", maxsplit=1)[0])
    assert [f.rule for f in alone] == ["ephemeral"]
    assert "port 49152-60999 of 49152-65535/udp" in alone[0].message


def test_target_version_fails_on_pools_an_older_release_would_refuse(reg: Registry) -> None:
    reg.write("registry.yaml", POOLS)
    loaded = reg.load("registry.yaml")
    old = [f for f in check_registry(loaded, None, (0, 1)) if f.rule == "target-version"]
    assert [(f.severity, f.location.line) for f in old] == [
        (Severity.ERROR, 4),
        (Severity.ERROR, 6),
    ]
    assert old[0].message.startswith(
        "coturn.service: 'pool' is new in portguard 0.2: portguard 0.1 refuses this whole "
        "registry (an unknown key), and its generator then guards no unit"
    )
    assert check_registry(loaded, None, (0, 2)) == ()
    # Any use of the key, not only a pool: 0.1 refuses `pool: false` just the same.
    reg.write("registry.yaml", "version: 1\nunits:\n  a.service:\n    listen:\n"
              "      - {port: 8080, pool: false}\n      - {port: 9000-9009, pool: true, "
              "min-free: 2}\n")  # fmt: skip
    loaded = reg.load("registry.yaml")
    found = [f.message for f in check_registry(loaded, None, (0, 1))]
    assert [m.split(" new in")[0] for m in found] == [
        "a.service: 'pool' is",
        "a.service: 'pool' and 'min-free' are",
    ]


# --- scale ---------------------------------------------------------------------------------


def test_a_thousand_units_load_and_lint_quickly(reg: Registry) -> None:
    lines = ["version: 1", "defaults: {wait: 5s, owner: fleet}", "units:"]
    for i in range(1000):
        lines += [
            f"  app{i}.service:",
            f"    listen: [{2000 + i}/tcp, '127.0.0.1:{4000 + i}/udp', '[::1]:{4000 + i}/tcp']",
            f"    description: application {i}",
        ]
    reg.write("registry.yaml", "\n".join(lines) + "\n")
    started = time.perf_counter()
    loaded = reg.load("registry.yaml")
    findings = check_registry(loaded, DEFAULT_LOCAL_PORTS)
    elapsed = time.perf_counter() - started
    assert findings == ()
    assert len(loaded.registry.units) == 1000
    assert elapsed < 2, f"{elapsed:.2f}s"


@pytest.mark.parametrize("name", sorted(pathological.BUILDERS))
def test_a_pathological_registry_gets_findings_linear_in_its_size(reg: Registry, name: str) -> None:
    """1 MB built to hurt (issue 24): as many findings as units at most, never a finding per
    pair, and a group of overlapping claims is one finding naming how many there are."""
    path = reg.write("registry.yaml", pathological.BUILDERS[name]())
    loaded = reg.load("registry.yaml")
    findings = check_registry(loaded, None)
    valid = not any(f.severity is Severity.ERROR for f in findings)
    assert valid == (name in pathological.VALID), describe(findings[:3])
    assert len(findings) <= max(len(loaded.registry.units), 30)
    assert sum(len(f.message) for f in findings) <= 400 * len(findings) + len(str(path)) * 4 * len(
        findings
    )
    groups = [f for f in findings if f.members]
    if name.startswith("one-port"):
        assert [len(f.members) for f in groups] == [pathological.UNITS]
    if name == "ranges":
        assert [f.rule for f in findings] == ["overlap-limit"]


# --- properties ----------------------------------------------------------------------------

POOL = [
    "80/tcp",
    "80/udp",
    "127.0.0.1:80/tcp",
    "0.0.0.0:80/tcp",
    "'[::]:80/tcp'",
    "{port: '[::]:80/tcp', v6only: true}",
    "'[::1]:80/tcp'",
    "'[::ffff:127.0.0.1]:80/tcp'",
    "79-81/tcp",
    "81-90/tcp",
    "10.0.0.1:85/tcp",
    "'%i/tcp'",
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.lists(st.sampled_from(POOL), min_size=1, max_size=3)),
        max_size=6,
    )
)
def test_overlap_findings_match_a_pairwise_oracle(
    reg: Registry, units: list[tuple[int, list[str]]]
) -> None:
    """One finding per group of claims joined by collisions of one rule, exactly the groups a
    check of every pair makes (claims joined through a chain count as one group)."""
    lines = ["version: 1", "units:"]
    for index, (number, entries) in enumerate(units):
        # Unit number 0 is a template, so %i is valid there and ignored by lint.
        name = f"t{index}@.service" if number == 0 else f"u{index}.service"
        kept = entries if number == 0 else [e for e in entries if "%i" not in e] or ["80/tcp"]
        lines.append(f"  {name}: {{listen: [{', '.join(kept)}]}}")
    reg.write("registry.yaml", "\n".join(lines) + "\n")
    loaded = reg.load("registry.yaml")
    placed = [
        (unit.name, listen.claim(), str(listen.location))
        for unit in loaded.registry.units.values()
        for listen in unit.listen
        if not listen.is_template
    ]
    edges: dict[str, list[tuple[int, int]]] = {"overlap": [], "overlap-self": [], "share": []}
    for i, j in itertools.combinations(range(len(placed)), 2):
        (name_a, a, _), (name_b, b, _) = placed[i], placed[j]
        if overlaps(a, b):
            rule = "overlap-self" if name_a == name_b else "share" if shares(a, b) else "overlap"
            edges[rule].append((i, j))
    assert loaded.findings == (), describe(loaded.findings)
    findings = check_registry(loaded, None)
    for rule, pairs in edges.items():
        groups = {frozenset(placed[i][2] for i in group) for group in components(pairs)}
        found = {frozenset(str(m.location) for m in f.members) for f in findings if f.rule == rule}
        assert found == groups, (rule, describe(findings))


def components(pairs: list[tuple[int, int]]) -> list[set[int]]:
    """The connected components of the graph with these edges (its nodes: their ends)."""
    groups: list[set[int]] = []
    for i, j in pairs:
        touching = [g for g in groups if i in g or j in g]
        merged = {i, j}.union(*touching)
        groups = [g for g in groups if g not in touching] + [merged]
    return groups


REGISTRY_WORDS = st.sampled_from(
    [
        "version",
        "defaults",
        "units",
        "listen",
        "wait",
        "mode",
        "via",
        "owner",
        "v6only",
        "port",
        "a.service",
        "b@.service",
        "x.socket",
        "80/tcp",
        "'[::]:80/tcp'",
        "1",
        "2",
        "10s",
        "infinity",
        "!!int abc",
        "!!bool maybe",
        "2001-13-45",
        "9" * 5000,
        "&a",
        "*a",
        "<<",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "- ",
        "\n",
        "\n  ",
        "\n    ",
        "\t",
        "'",
        '"',
        "%i/tcp",
        "null",
        "~",
        "?",
        "#",
        "\x00",
        "é",
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.lists(REGISTRY_WORDS, max_size=40).map(lambda w: " ".join(w).encode()),
        st.lists(REGISTRY_WORDS, max_size=40).map(lambda w: "".join(w).encode()),
    )
)
def test_any_file_content_gives_findings_never_an_exception(reg: Registry, data: bytes) -> None:
    path = reg.write("registry.yaml", data)
    findings = check_registry(load(RegistrySource(path)), DEFAULT_LOCAL_PORTS)
    for finding in findings:
        assert finding.location.path == str(path)
        assert finding.location.line >= 0
        if finding.location.line > 0:
            assert finding.location.column > 0
        assert finding.message
        assert finding.severity in (Severity.ERROR, Severity.WARNING)

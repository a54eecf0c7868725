"""Registry v1: what `load` reads from the files, how it merges them, and where it points."""

import ipaddress
import os
from pathlib import Path

import pytest

from portguard.registry.claims import Claim, ClaimSyntaxError, Proto
from portguard.registry.entries import Mode, Registry, RegistrySource, UnitEntry
from portguard.registry.findings import Severity
from portguard.registry.model import load
from tests.conftest import DESIGN_EXAMPLE, describe, only
from tests.conftest import Registry as Files

# --- values --------------------------------------------------------------------------------


def test_listen_forms_become_claims(reg: Files) -> None:
    loaded = reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          web.service:
            listen:
              - 8080
              - 8081/udp
              - 10.1.2.3:8082/tcp
              - "[2001:db8::1]:8083/udp"
              - 9000-9010/TCP
              - {port: "[::]:8084/tcp", v6only: true, reuseport: true}
              - {port: 8085, reuseaddr: false}
        """,
    )
    loaded = reg.load("registry.yaml")
    assert loaded.findings == (), describe(loaded.findings)
    claims = [listen.claim() for listen in loaded.registry.units["web.service"].listen]
    v4 = ipaddress.IPv4Address("10.1.2.3")
    v6 = ipaddress.IPv6Address("2001:db8::1")
    assert claims == [
        Claim(Proto.TCP, 8080, 8080),
        # A UDP socket shares its port only when its unit or listen entry says so.
        Claim(Proto.UDP, 8081, 8081, reuseaddr=False),
        Claim(Proto.TCP, 8082, 8082, v4),
        Claim(Proto.UDP, 8083, 8083, v6, reuseaddr=False),
        Claim(Proto.TCP, 9000, 9010),
        Claim(Proto.TCP, 8084, 8084, ipaddress.IPv6Address("::"), v6only=True, reuseport=True),
        Claim(Proto.TCP, 8085, 8085, reuseaddr=False),
    ]


def test_listen_keeps_its_text_and_location(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        'version: 1\nunits:\n  a.service:\n    listen: [80/tcp, "[::1]:81/tcp", {port: 82}]\n',
    )
    listens = reg.load("registry.yaml").registry.units["a.service"].listen
    assert [listen.text for listen in listens] == ["80/tcp", "[::1]:81/tcp", "82"]
    assert [(x.location.line, x.location.column) for x in listens] == [(4, 14), (4, 23), (4, 45)]


def test_unit_entry_fields_and_defaults(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          web.service:
            listen: [80/tcp]
            owner: web-team
            description: the web
            via: [web.socket, web-helper.service]
          bare.service:
            listen: [81/tcp]
        """,
    )
    units = reg.load("registry.yaml").registry.units
    web = units["web.service"]
    assert (web.owner, web.description, web.via) == (
        "web-team",
        "the web",
        ("web.socket", "web-helper.service"),
    )
    assert (web.location.line, web.location.column) == (3, 3)
    bare = units["bare.service"]
    # Built-in defaults when the registry sets none.
    assert (bare.wait_ms, bare.mode, bare.owner, bare.description, bare.via) == (
        10_000,
        Mode.ENFORCE,
        None,
        None,
        (),
    )
    listen = bare.listen[0]
    assert (listen.v6only, listen.reuseaddr, listen.reuseport) == (False, True, False)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("10s", 10_000),
        ("1min 30s", 90_000),
        ("7", 7_000),  # a bare number is seconds, as in systemd
        ("1.5", 1_500),
        ("0", 0),
        ("2h", 7_200_000),
        ("250us", 1),  # rounded up: a tiny wait never becomes no wait
    ],
)
def test_wait_time_spans(reg: Files, text: str, ms: int) -> None:
    reg.write(
        "registry.yaml", f"version: 1\nunits:\n  a.service:\n    listen: [80]\n    wait: {text}\n"
    )
    loaded = reg.load("registry.yaml")
    assert loaded.findings == (), describe(loaded.findings)
    assert loaded.registry.units["a.service"].wait_ms == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10 parsecs", "unknown time unit 'parsecs'"),
        ("infinity", "the wait must be finite"),
        ("soon", "'soon' is not a time span"),
        ("-5s", "'-5s' is not a time span"),
        ('""', "expected a time span such as 500ms"),
        ("10S", "unknown time unit 'S'"),
    ],
)
def test_bad_wait_is_located(reg: Files, text: str, message: str) -> None:
    reg.write("registry.yaml", f"version: 1\ndefaults:\n  wait: {text}\n")
    finding = only(reg.load("registry.yaml").findings)
    assert finding.rule == "timespan"
    assert (finding.location.line, finding.location.column) == (3, 9 + text.startswith('"'))
    assert message in finding.message


@pytest.mark.parametrize("mode", list(Mode))
def test_modes(reg: Files, mode: Mode) -> None:
    reg.write("registry.yaml", f"version: 1\nunits:\n  a.service: {{listen: [80], mode: {mode}}}\n")
    loaded = reg.load("registry.yaml")
    assert loaded.findings == ()
    assert loaded.registry.units["a.service"].mode is mode


@pytest.mark.parametrize("value", ["Enforce", "true", "1", "[enforce]", "block"])
def test_bad_mode(reg: Files, value: str) -> None:
    reg.write("registry.yaml", f"version: 1\ndefaults:\n  mode: {value}\n")
    finding = only(reg.load("registry.yaml").findings)
    assert (finding.rule, finding.location.line, finding.location.column) == ("type", 3, 9)
    assert finding.message.startswith("'mode' must be enforce, warn or audit, got ")


@pytest.mark.parametrize("key", ["reuseaddr", "reuseport", "v6only"])
@pytest.mark.parametrize("value", ["'true'", "1", "[true]", "null"])
def test_socket_options_must_be_booleans(reg: Files, key: str, value: str) -> None:
    reg.write("registry.yaml", f"version: 1\ndefaults:\n  {key}: {value}\n")
    finding = only(reg.load("registry.yaml").findings)
    column = len(f"  {key}: ") + 1 + value.startswith("'")
    assert (finding.rule, finding.location.line, finding.location.column) == ("type", 3, column)
    assert f"'{key}' must be true or false" in finding.message


# --- defaults and their inheritance --------------------------------------------------------


def test_defaults_inheritance_and_overrides(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        """
        version: 1
        defaults:
          wait: 3s
          mode: warn
          owner: platform
          v6only: true
          reuseaddr: false
        units:
          plain.service:
            listen: ["[::]:80/tcp"]
          custom.service:
            wait: 250ms
            mode: audit
            owner: team-b
            v6only: false
            listen:
              - "[::]:81/tcp"
              - {port: "[::]:82/tcp", v6only: true, reuseaddr: true}
        """,
    )
    loaded = reg.load("registry.yaml")
    assert loaded.findings == (), describe(loaded.findings)
    plain = loaded.registry.units["plain.service"]
    assert (plain.wait_ms, plain.mode, plain.owner) == (3_000, Mode.WARN, "platform")
    assert (plain.listen[0].v6only, plain.listen[0].reuseaddr) == (True, False)
    custom = loaded.registry.units["custom.service"]
    assert (custom.wait_ms, custom.mode, custom.owner) == (250, Mode.AUDIT, "team-b")
    # The unit's override, then the listen entry's own.
    assert [(x.v6only, x.reuseaddr) for x in custom.listen] == [(False, False), (True, True)]


def test_main_defaults_reach_dropins_and_dropin_defaults_stay_local(reg: Files) -> None:
    reg.write("registry.yaml", "version: 1\ndefaults: {wait: 2s, owner: ops}\nunits:\n")
    reg.write(
        "registry.d/10-own.yaml",
        "version: 1\ndefaults: {wait: 30s}\nunits:\n  own.service: {listen: [81]}\n",
    )
    reg.write(
        "registry.d/20-inherit.yaml", "version: 1\nunits:\n  inherit.service: {listen: [82]}\n"
    )
    loaded = load(RegistrySource.installed(reg.root))
    assert loaded.findings == (), describe(loaded.findings)
    units = loaded.registry.units
    # A drop-in's own defaults override the main file's for its units only ...
    assert (units["own.service"].wait_ms, units["own.service"].owner) == (30_000, "ops")
    # ... and a later drop-in still sees only the main file's.
    assert (units["inherit.service"].wait_ms, units["inherit.service"].owner) == (2_000, "ops")


def test_defaults_in_a_dropin_do_not_reach_the_main_file(reg: Files) -> None:
    reg.write("registry.yaml", "version: 1\nunits:\n  main.service: {listen: [80]}\n")
    reg.write("registry.d/a.yaml", "version: 1\ndefaults: {mode: audit}\n")
    loaded = load(RegistrySource.installed(reg.root))
    assert loaded.registry.units["main.service"].mode is Mode.ENFORCE


def test_defaults_written_after_units_still_apply(reg: Files) -> None:
    reg.write(
        "registry.yaml", "version: 1\nunits:\n  a.service: {listen: [80]}\ndefaults: {wait: 1s}\n"
    )
    assert reg.load("registry.yaml").registry.units["a.service"].wait_ms == 1_000


def test_a_bad_default_keeps_the_built_in_value(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        "version: 1\ndefaults: {wait: never, mode: audit}\nunits:\n  a.service: {listen: [80]}\n",
    )
    loaded = reg.load("registry.yaml")
    assert only(loaded.findings).rule == "timespan"
    unit = loaded.registry.units["a.service"]
    assert (unit.wait_ms, unit.mode) == (10_000, Mode.AUDIT)


# --- Registry.entry_for and Listen.claim ---------------------------------------------------


@pytest.fixture
def templates(reg: Files) -> Registry:
    reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          web.service:
            listen: [80/tcp]
          redis@.service:
            listen: ["%i/tcp", "127.0.0.1:%i/udp"]
          redis@6380.service:
            listen: [16380/tcp]
          pool@.socket:
            listen: ["[::1]:%i/tcp"]
        """,
    )
    loaded = reg.load("registry.yaml")
    assert loaded.findings == (), describe(loaded.findings)
    return loaded.registry


def _name(found: tuple[UnitEntry, str | None] | None) -> tuple[str, str | None] | None:
    return None if found is None else (found[0].name, found[1])


def test_entry_for_exact_name(templates: Registry) -> None:
    assert _name(templates.entry_for("web.service")) == ("web.service", None)


def test_entry_for_template_instance(templates: Registry) -> None:
    assert _name(templates.entry_for("redis@6379.service")) == ("redis@.service", "6379")
    assert _name(templates.entry_for("pool@9000-9010.socket")) == ("pool@.socket", "9000-9010")


def test_entry_for_instance_specific_entry_wins(templates: Registry) -> None:
    assert _name(templates.entry_for("redis@6380.service")) == ("redis@6380.service", "6380")


def test_entry_for_unknown_units(templates: Registry) -> None:
    assert templates.entry_for("nginx.service") is None
    assert templates.entry_for("web@1.service") is None  # web.service is no template
    assert templates.entry_for("redis@6379.socket") is None  # another unit type
    assert _name(templates.entry_for("redis@.service")) == ("redis@.service", None)


def test_template_claims_take_the_instance(templates: Registry) -> None:
    entry, instance = templates.entry_for("redis@6379.service") or (None, None)
    assert entry is not None
    assert all(listen.is_template for listen in entry.listen)
    assert [str(listen.claim(instance)) for listen in entry.listen] == [
        "6379/tcp",
        "127.0.0.1:6379/udp",
    ]
    pool = templates.units["pool@.socket"].listen[0]
    assert pool.claim("9000-9010") == Claim(Proto.TCP, 9000, 9010, ipaddress.IPv6Address("::1"))


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        (None, "%i needs a template instance"),
        ("main", "'main' is not a port"),
        ("0", "port 0 is out of range"),
        ("70000", "port 70000 is out of range"),
        ("10-5", "range 10-5 is reversed"),
    ],
)
def test_template_claim_with_an_instance_that_is_no_port(
    templates: Registry, instance: str | None, message: str
) -> None:
    listen = templates.units["redis@.service"].listen[0]
    with pytest.raises(ClaimSyntaxError, match=message):
        listen.claim(instance)


def test_concrete_listen_ignores_the_instance(templates: Registry) -> None:
    listen = templates.units["web.service"].listen[0]
    assert not listen.is_template
    assert listen.claim("6379") == Claim(Proto.TCP, 80, 80)


# --- structure: duplicates, merge keys, quoted columns -------------------------------------


def test_duplicate_keys_are_reported_and_the_first_wins(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          a.service:
            listen: [80]
            wait: 1s
            wait: 2s
        """,
    )
    loaded = reg.load("registry.yaml")
    finding = only(loaded.findings)
    assert (finding.rule, finding.location.line, finding.location.column) == (
        "duplicate-key",
        6,
        5,
    )
    assert finding.message == "'wait' appears twice in unit a.service (first at line 5)"
    assert loaded.registry.units["a.service"].wait_ms == 1_000


def test_merge_keys_are_refused_with_their_location(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        """
        version: 1
        base: &base {wait: 1s}
        units:
          a.service:
            <<: *base
            listen: [80]
        """,
    )
    findings = reg.load("registry.yaml").findings
    merge = only(findings, "merge-key")
    assert (merge.location.line, merge.location.column) == (5, 5)
    assert "use 'defaults:' instead" in merge.message
    assert only(findings, "unknown-key").message.startswith("unknown key 'base'")


@pytest.mark.parametrize("quote", ["'", '"'])
def test_quoted_scalars_are_pointed_at_inside_the_quotes(reg: Files, quote: str) -> None:
    reg.write(
        "registry.yaml",
        f"version: 1\nunits:\n  a.service:\n    listen: [{quote}nohost:80/tcp{quote}, "
        f"{quote}[::1]:0/tcp{quote}]\n    mode: {quote}loud{quote}\n",
    )
    findings = reg.load("registry.yaml").findings
    assert [(f.rule, f.location.line, f.location.column) for f in findings] == [
        ("listen", 4, 15),  # the 'n' of nohost (offset 0), not the quote
        ("listen", 4, 38),  # the '0' of the port (offset 6)
        ("type", 5, 12),  # the 'l' of loud
    ]


def test_offsets_point_into_plain_scalars(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        "version: 1\nunits:\n  a.service:\n    listen:\n      - 10.0.0.1:8080/sctp\n",
    )
    finding = only(reg.load("registry.yaml").findings)
    assert (finding.location.line, finding.location.column) == reg.at("registry.yaml", "sctp")


def test_columns_count_characters_not_bytes(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        "version: 1\nunits:\n  a.service:\n    description: café ☕\n    listen: [80]\n"
        "  b.service: {description: ☕☕☕, listen: [0]}\n",
    )
    finding = only(reg.load("registry.yaml").findings)
    assert (finding.location.line, finding.location.column) == (6, 42)


def test_version_variants(reg: Files) -> None:
    reg.write("registry.yaml", "version: 0x1\n")
    assert "unsupported version '0x1'" in only(reg.load("registry.yaml").findings).message
    reg.write("registry.yaml", "version: [1]\n")
    finding = only(reg.load("registry.yaml").findings)
    assert (finding.location.line, finding.location.column) == (1, 10)
    assert "unsupported version 'a list'" in finding.message
    reg.write("registry.yaml", "version:   1   # the only one\n")
    assert reg.load("registry.yaml").findings == ()


@pytest.mark.parametrize(
    "content",
    [b"", b"\n\n", b"# only a comment\n", b"---\n", b"---\n...\n", b"~\n", b"null\n"],
    ids=repr,
)
def test_empty_files(reg: Files, content: bytes) -> None:
    path = reg.write("registry.yaml", content)
    finding = only(load(RegistrySource(path)).findings)
    assert (finding.rule, finding.severity) == ("empty", Severity.ERROR)
    assert (finding.location.path, finding.location.line, finding.location.column) == (
        str(path),
        0,
        0,
    )
    assert "empty" in finding.message


@pytest.mark.parametrize(
    ("content", "line", "column"),
    [
        (b"\x00\x01\x02\x03", 1, 1),
        (b"version: 1\n\x1b[31m\n", 2, 1),
        (b"\x7fELF\x02\x01\x01\x00", 1, 1),
    ],
)
def test_control_characters_are_yaml_errors(
    reg: Files, content: bytes, line: int, column: int
) -> None:
    finding = only(load(RegistrySource(reg.write("registry.yaml", content))).findings)
    assert (finding.rule, finding.location.line, finding.location.column) == ("yaml", line, column)
    assert "binary data?" in finding.message


def test_invalid_utf8_is_located(reg: Files) -> None:
    path = reg.write("registry.yaml", b"version: 1\nunits:\n  a.service:\n    owner: \xff\xfe\n")
    finding = only(load(RegistrySource(path)).findings)
    assert (finding.rule, finding.location.line, finding.location.column) == ("encoding", 4, 12)
    assert finding.message.startswith("byte 0xff is not UTF-8")


def test_utf16_file_is_an_encoding_error(reg: Files) -> None:
    path = reg.write("registry.yaml", "version: 1\n".encode("utf-16"))
    assert only(load(RegistrySource(path)).findings).rule == "encoding"


# --- files: the installed layout, explicit files, unreadable ones --------------------------


def test_installed_layout_reads_main_then_dropins_in_lexical_order(reg: Files) -> None:
    reg.write("registry.yaml", "version: 1\nunits:\n  main.service: {listen: [80]}\n")
    reg.write("registry.d/20-b.yaml", "version: 1\nunits:\n  b.service: {listen: [82]}\n")
    reg.write("registry.d/10-a.yaml", "version: 1\nunits:\n  a.service: {listen: [81]}\n")
    reg.write("registry.d/README", "not a registry file")
    reg.write("registry.d/30-c.yaml.disabled", "garbage: [")
    source = RegistrySource.installed(reg.root)
    assert source.main == reg.root / "registry.yaml"
    assert source.dropins == (reg.root / "registry.d/10-a.yaml", reg.root / "registry.d/20-b.yaml")
    loaded = load(source)
    assert loaded.findings == (), describe(loaded.findings)
    assert list(loaded.registry.units) == ["main.service", "a.service", "b.service"]
    assert loaded.registry.files == tuple(str(p) for p in source.files)


def test_installed_layout_with_only_dropins(reg: Files) -> None:
    reg.write("registry.d/a.yaml", "version: 1\nunits:\n  a.service: {listen: [81]}\n")
    source = RegistrySource.installed(reg.root)
    assert source.main is None
    assert source.files == (reg.root / "registry.d/a.yaml",)
    loaded = load(source)
    assert loaded.findings == ()
    assert list(loaded.registry.units) == ["a.service"]


def test_installed_layout_with_nothing_there(reg: Files) -> None:
    source = RegistrySource.installed(reg.root)
    assert source.files == (reg.root / "registry.yaml",)
    finding = only(load(source).findings)
    assert (finding.rule, finding.severity) == ("unreadable", Severity.ERROR)
    assert str(finding.location) == str(reg.root / "registry.yaml")
    assert finding.message == "cannot read: No such file or directory"


def test_from_paths(reg: Files, tmp_path: Path) -> None:
    a, b = reg.write("a.yaml", "version: 1\n"), reg.write("b.yaml", "version: 1\n")
    assert RegistrySource.from_paths([a, b]) == RegistrySource(a, (b,))
    assert RegistrySource.from_paths([tmp_path]) == RegistrySource.installed(tmp_path)
    assert RegistrySource.from_paths([]).files == ()


def test_unreadable_file(reg: Files, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        path = reg.write("registry.yaml", "version: 1\n")
        path.chmod(0)
        reason = "Permission denied"
    else:  # root reads any file: a directory in the file's place cannot be read either
        path = tmp_path / "registry.yaml"
        path.mkdir()
        reason = "Is a directory"
    finding = only(load(RegistrySource(path)).findings)
    assert (finding.rule, finding.severity, str(finding.location)) == (
        "unreadable",
        Severity.ERROR,
        str(path),
    )
    assert finding.message == f"cannot read: {reason}"


def test_one_bad_file_does_not_hide_the_others(reg: Files, tmp_path: Path) -> None:
    reg.write("registry.yaml", "version: 1\nunits:\n  a.service: {listen: [80]}\n")
    reg.write("registry.d/10-bad.yaml", b"\xff")
    reg.write("registry.d/20-good.yaml", "version: 1\nunits:\n  b.service: {listen: [81]}\n")
    loaded = load(RegistrySource.installed(tmp_path))
    assert [f.rule for f in loaded.findings] == ["encoding"]
    assert list(loaded.registry.units) == ["a.service", "b.service"]


def test_a_bad_unit_does_not_hide_the_next(reg: Files) -> None:
    reg.write(
        "registry.yaml",
        """
        version: 1
        units:
          bad name.service: {listen: [80]}
          a.service: {listen: [0, 81, 70000]}
          b.service: {listen: [82]}
        """,
    )
    loaded = reg.load("registry.yaml")
    assert [(f.rule, f.location.line) for f in loaded.findings] == [
        ("unit-name", 3),
        ("listen", 4),
        ("listen", 4),
    ]
    assert list(loaded.registry.units) == ["a.service", "b.service"]
    assert [x.text for x in loaded.registry.units["a.service"].listen] == ["81"]


def test_design_example_loads_clean() -> None:
    loaded = load(RegistrySource(DESIGN_EXAMPLE))
    assert loaded.findings == ()
    assert loaded.errors == ()
    assert loaded.registry.files == (str(DESIGN_EXAMPLE),)
    nginx = loaded.registry.units["nginx.service"]
    assert (nginx.wait_ms, nginx.mode) == (10_000, Mode.ENFORCE)


def test_load_result_errors_excludes_warnings(reg: Files) -> None:
    reg.write("registry.yaml", "version: 2\n")
    loaded = reg.load("registry.yaml")
    assert [f.severity for f in loaded.errors] == [Severity.ERROR]


def test_quoted_version_says_to_remove_the_quotes(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text('version: "1"\nunits: {}\n')
    findings = load(RegistrySource(path)).findings
    assert [(f.rule, f.location.line, f.location.column) for f in findings] == [("version", 1, 11)]
    assert "remove the quotes" in findings[0].message


def test_hidden_files_in_registry_d_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "registry.d").mkdir()
    (tmp_path / "registry.d" / "10-a.yaml").write_text("version: 1\nunits: {}\n")
    (tmp_path / "registry.d" / ".#10-a.yaml").write_text("garbage: [")
    source = RegistrySource.installed(tmp_path)
    assert source.main is None
    assert source.dropins == (tmp_path / "registry.d" / "10-a.yaml",)
    assert load(source).findings == ()

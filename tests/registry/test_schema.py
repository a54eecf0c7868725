"""The registry's JSON Schema (packaging/registry.schema.json) agrees with `portguard lint`.

Every file lint accepts, the schema accepts. Every corpus file lint rejects, the schema
rejects too, unless what is wrong is something a schema cannot say (LINT_ONLY names each
such file and why). Both are checked on the corpus and on generated listen strings and time
spans. The schema is applied as CI validators and editors apply it: to the YAML read as
data and written as JSON. Debian's python3-jsonschema does the validating.
"""

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from portguard.registry import keys
from portguard.registry.claims import ClaimSyntaxError, parse_listen
from portguard.registry.entries import RegistrySource
from portguard.registry.findings import Severity
from portguard.registry.lint import check_registry
from portguard.registry.model import load
from portguard.registry.timespan import TimespanError, parse_timespan_ms
from tests.conftest import (
    BAD_RULE_FILES,
    CHECKOUT,
    EXAMPLE_REGISTRY,
    GOOD_RULE_FILES,
    INSTALLED,
    expectations,
    shipped,
)

SCHEMA_FILE = shipped("packaging/registry.schema.json", "/usr/share/portguard/registry.schema.json")
SCHEMA = json.loads(SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
DEFINITIONS = SCHEMA["definitions"]

# What a schema cannot say, by corpus file. Each reason is one of the operator's reference's
# list (packaging/README.md, "Editors and CI").
YAML_ITSELF = "not YAML a validator can read as data (encoding, syntax, several documents)"
LINT_ONLY = {
    "address-broadcast-tcp": "which addresses TCP can bind",
    "address-multicast-tcp": "which addresses TCP can bind",
    "address-ipv6-invalid": "a valid IPv6 address (the schema checks its characters)",
    "address-mapped-v6only": "an IPv4-mapped address with v6only (one claim's two keys)",
    "duplicate-key-top": "duplicate keys (YAML keeps the last one)",
    "duplicate-key-unit": "duplicate keys (YAML keeps the last one)",
    "merge-key": "anchors and merge keys (a validator sees them resolved)",
    "nesting-too-deep": "anchors and merge keys (a validator sees them resolved)",
    "overlap-dual-stack": "overlaps between claims",
    "overlap-limit": "overlaps between claims",
    "overlap-ranges": "overlaps between claims",
    "overlap-wildcard": "overlaps between claims",
    "overlap-pool": "overlaps between claims",
    "pool-min-free-too-many": "a pool's size against its min-free",
    "port-hex": "how YAML spelled a number (0x50 is read as 80)",
    "range-reversed": "a range's order",
    "timespan-infinity": "a finite time span (the schema checks its form)",
    "type-bad-timestamp": "YAML's own types (a date is not text to a JSON validator)",
    "unit-name-too-long-for-dropin": "unit-name length (in bytes, with the drop-in directory)",
    "version-float": "how YAML spelled a number (1.0 is 1 in JSON)",
    "encoding-latin1": YAML_ITSELF,
    "type-key-not-text": YAML_ITSELF,  # a list as a key: no JSON has one
    "type-unreadable-value": YAML_ITSELF,  # !!int abc
    "yaml-multiple-documents": YAML_ITSELF,
    "yaml-nul-byte": YAML_ITSELF,
    "yaml-tab-indent": YAML_ITSELF,
    "yaml-unclosed-flow": YAML_ITSELF,
}


def as_json(path: Path) -> Any:
    """The file as a validator sees it: YAML read as data, then written as JSON (keys become
    text, dates their ISO form)."""
    return json.loads(json.dumps(yaml.safe_load(path.read_bytes()), default=str))


def schema_errors(data: Any) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(data)]


def lint_errors(*paths: Path) -> list[str]:
    loaded = load(RegistrySource.from_paths(list(paths)))
    findings = check_registry(loaded, None)
    return [f.message for f in findings if f.severity is Severity.ERROR]


def test_the_schema_is_a_valid_draft_7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_the_schema_knows_the_keys_the_readers_read() -> None:
    """registry/keys.py is the one list of keys: the schema allows exactly those, at each level."""
    definitions = SCHEMA["definitions"]
    claim = next(
        form for form in definitions["listen"]["items"]["oneOf"] if form.get("type") == "object"
    )
    assert tuple(SCHEMA["properties"]) == keys.TOP_KEYS
    assert set(SCHEMA["properties"]["defaults"]["properties"]) == set(keys.DEFAULT_KEYS)
    for unit in ("unit", "template_unit"):
        assert set(definitions[unit]["properties"]) == set(keys.UNIT_KEYS)
    assert set(claim["properties"]) == set(keys.LISTEN_KEYS)
    assert {k for k in keys.OPTIONS if k in definitions} == set(keys.OPTIONS)


EXAMPLES = [*GOOD_RULE_FILES, EXAMPLE_REGISTRY]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_what_lint_accepts_the_schema_accepts(path: Path) -> None:
    assert lint_errors(path) == []
    assert schema_errors(as_json(path)) == []


@pytest.mark.parametrize("path", BAD_RULE_FILES, ids=lambda p: p.stem)
def test_the_schema_agrees_with_lint_on_the_corpus(path: Path) -> None:
    lint_rejects = any(e.severity is Severity.ERROR for e in expectations(path))
    if path.stem in LINT_ONLY:
        assert lint_rejects, f"{path.stem} is listed as lint's alone, but lint accepts it"
        return
    if not lint_rejects:  # warnings only: lint accepts it, so must the schema
        assert schema_errors(as_json(path)) == [], path
        return
    assert schema_errors(as_json(path)), f"lint rejects {path.name}; the schema accepts it"


@pytest.mark.skipif(INSTALLED, reason="packaging/README.md is the checkout's; the package "
                    "ships none")  # fmt: skip
def test_every_lint_only_file_exists_and_every_reason_is_in_the_reference() -> None:
    stems = {p.stem for p in BAD_RULE_FILES}
    assert set(LINT_ONLY) <= stems
    readme = (CHECKOUT / "packaging" / "README.md").read_text()
    for topic in ("overlaps", "a range's order", "a pool's size against its min-free",
                  "unit-name length", "duplicate keys", "anchors",
                  "which addresses TCP can bind"):  # fmt: skip
        assert topic in readme, topic


def test_the_installed_example_says_which_schema_it_follows() -> None:
    first = EXAMPLE_REGISTRY.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=/usr/share/portguard/registry.schema.json"


def test_a_template_alone_may_claim_its_instance_as_port() -> None:
    unit = {"listen": ["%i/tcp"]}
    assert schema_errors({"version": 1, "units": {"redis@.service": unit}}) == []
    assert schema_errors({"version": 1, "units": {"redis@6379.service": unit}})
    assert schema_errors({"version": 1, "units": {"redis.service": unit}})


# --- generated: listen strings and time spans ---------------------------------------------------

OCTETS = st.sampled_from(
    ["0", "1", "9", "10", "99", "100", "199", "249", "255", "256", "01", "300"]
)
IPV4 = st.lists(OCTETS, min_size=3, max_size=5).map(".".join)
IPV6 = st.sampled_from(["::", "::1", "fe80::1", "2001:db8::42", "::ffff:127.0.0.1", "fe80::1%eth0",
                        "1:2:3:4:5:6:7:8", "g::1", "1::2::3", ""])  # fmt: skip
PORTS = st.one_of(
    st.integers(0, 70000).map(str),
    st.sampled_from(["08080", "0", "00", "65535", "65536", "1e3", " 80", "+80", "80 ", "٣"]),
)
ADDRESS = st.one_of(st.just(""), IPV4.map(lambda a: a + ":"), IPV6.map(lambda a: f"[{a}]:"))
PROTOS = st.sampled_from(["", "/tcp", "/udp", "/TCP", "/Udp", "/sctp", "/", "/tcp/"])
LISTEN = st.builds(
    lambda address, first, last, proto: f"{address}{first}{'-' + last if last else ''}{proto}",
    ADDRESS,
    st.one_of(PORTS, st.just("%i")),
    st.one_of(st.none(), PORTS),
    PROTOS,
)


def pattern_accepts(definition: str, value: Any) -> bool:
    """Whether the one claim VALUE passes the listen list DEFINITION of the schema."""
    schema = {**DEFINITIONS[definition], "definitions": DEFINITIONS}
    return not list(jsonschema.Draft7Validator(schema).iter_errors([value]))


@settings(max_examples=600)
@given(LISTEN)
def test_every_listen_string_lint_parses_the_schema_accepts(text: str) -> None:
    try:
        parts = parse_listen(text)
    except ClaimSyntaxError:
        return
    if parts.first is None:  # %i: a template's alone
        assert pattern_accepts("template_listen", text), text
        assert not pattern_accepts("listen", text), text
    else:
        assert pattern_accepts("listen", text), text
        assert pattern_accepts("template_listen", text), text


@settings(max_examples=600)
@given(LISTEN)
def test_a_listen_string_the_schema_rejects_lint_rejects(text: str) -> None:
    if not pattern_accepts("template_listen", text):
        with pytest.raises(ClaimSyntaxError):
            parse_listen(text)


SPAN_PARTS = st.sampled_from(["1", "10", "0", ".5", "1.", "1.5", " ", "  ", "s", "ms", "min", "m",
                              "h", "hr", "d", "w", "us", "µs", "μs", "usec", "sec", "minutes",
                              "x", "ss", "infinity", "-", "\t", "٣", "e"])  # fmt: skip


@settings(max_examples=800)
@given(st.lists(SPAN_PARTS, min_size=1, max_size=6).map("".join))
def test_the_schema_and_lint_agree_on_time_spans(text: str) -> None:
    try:
        parse_timespan_ms(text)
        lint_accepts = True
    except TimespanError:
        lint_accepts = False
    wait = {"$ref": "#/definitions/wait", "definitions": DEFINITIONS}
    schema_accepts = not list(jsonschema.Draft7Validator(wait).iter_errors(text))
    if lint_accepts:
        assert schema_accepts, text
    if not schema_accepts:
        assert not lint_accepts, text

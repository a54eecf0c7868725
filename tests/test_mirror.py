"""The tests mirror the tree (STYLE.md): each module `src/portguard/X/y.py` has
`tests/X/test_y.py` (`tests/cli/test_cli_y.py` for the command layer), or a line below saying
where it is tested instead and why that is the better place. A line must name test files
that exist; one for a module that gained its own mirror must go."""

from pathlib import Path

from tests.conftest import CHECKOUT, SRC

PACKAGE = SRC / "portguard"
TESTS = CHECKOUT / "tests"

# Module -> (the test files that prove it, why they and not a mirror of its own).
TESTED_ELSEWHERE: dict[str, tuple[tuple[str, ...], str]] = {
    "__main__.py": (
        ("tests/test_main.py", "tests/freepath/test_check.py"),
        "the entry point: run as `python3 -m portguard`, which is what they do",
    ),
    "cli/reserve.py": (
        ("tests/commands/test_reserve.py", "tests/cli/test_cli_misc.py"),
        "ten lines of argparse; its tests run the verb through cli.main",
    ),
    "cli/wait.py": (
        ("tests/cli/test_cli_misc.py", "tests/system/test_wait.py"),
        "argparse only; the command line's values are test_values.py's",
    ),
    "commands/attribution.py": (
        ("tests/policy/test_attribute.py", "tests/system/test_check.py"),
        "the real context attribution runs in: only a host has one",
    ),
    "commands/exposition.py": (
        (
            "tests/commands/test_audit.py",
            "tests/test_prometheus_text.py",
            "tests/system/test_alerts.py",
        ),
        "audit's third rendering, tested with the other two",
    ),
    "commands/trusted.py": (
        (
            "tests/commands/test_check.py",
            "tests/freepath/test_trust.py",
            "tests/freepath/test_check.py",
        ),
        "the compiled form is the free path's and check's contract",
    ),
    "commands/wait.py": (
        ("tests/policy/test_waiting.py", "tests/system/test_wait.py"),
        "the real effects of policy/waiting.py: a kernel and holders",
    ),
    "commands/why.py": (
        ("tests/cli/test_cli_why.py", "tests/system/test_why.py", "tests/policy/test_diagnosis.py"),
        "gathers from a real host; its judgement is diagnosis.py's",
    ),
    "commands/whytext.py": (
        ("tests/policy/test_diagnosis.py",),
        "the diagnosis's text and JSON, read beside the diagnosis",
    ),
    "freepath/binds.py": (
        (
            "tests/freepath/test_check.py",
            "tests/host/test_probe.py",
            "tests/kernel/test_differential.py",
        ),
        "the trial bind: proved against the kernel through its callers",
    ),
    "host/addresses.py": (
        ("tests/host/test_ipvs.py", "tests/system/test_redirects.py"),
        "this host's addresses, read for the NAT judgement",
    ),
    "host/files.py": (("tests/cli/test_cli_audit.py",), "audit --output's atomic write"),
    "host/nftables.py": (
        (
            "tests/host/test_iptables.py",
            "tests/commands/test_redirects.py",
            "tests/kernel/test_nat_differential.py",
        ),
        "the ruleset reader: only a kernel's ruleset is a fair input",
    ),
    "host/nftexprs.py": (
        ("tests/policy/test_natflow.py", "tests/kernel/test_nat_differential.py"),
        "nftables.py's expression decoder, used only through it",
    ),
    "host/occupants.py": (
        ("tests/host/test_sockets.py", "tests/policy/test_attribute.py"),
        "the census's value type, a dataclass",
    ),
    "host/sockwatch.py": (
        ("tests/system/test_wait.py", "tests/policy/test_waiting.py"),
        "sock_diag destroy notifications: a kernel's, in the sandbox",
    ),
    "host/xtables.py": (
        ("tests/host/test_iptables.py", "tests/policy/test_natflow.py"),
        "iptables-nft's compat blobs, decoded from real iptables rules",
    ),
    "policy/audit.py": (
        ("tests/commands/test_audit.py",),
        "audit's judgement beside its renderings, one verb's tests",
    ),
    "policy/blockers.py": (
        ("tests/policy/test_guard.py", "tests/policy/test_pools.py"),
        "who is in the way: the check policy's, with its fakes",
    ),
    "policy/endings.py": (
        ("tests/policy/test_guard.py", "tests/policy/test_report.py", "tests/test_catalog.py"),
        "the Report of each ending, read through the policy that ends",
    ),
    "policy/inventory.py": (
        ("tests/commands/test_init.py",),
        "init's judgement beside its YAML, one verb's tests",
    ),
    "policy/kinds.py": (
        ("tests/policy/test_report.py", "tests/policy/test_attribute.py"),
        "the owner kinds' table: each row through describe and remedy",
    ),
    "policy/natmatch.py": (("tests/policy/test_natflow.py",), "natflow's matching, one run"),
    "policy/natports.py": (
        ("tests/system/test_redirects.py",),
        "the ports init asks NAT about: a real ruleset's",
    ),
    "policy/owners.py": (("tests/policy/test_attribute.py",), "attribution's value types"),
    "policy/redirects.py": (
        ("tests/commands/test_redirects.py", "tests/policy/test_natflow.py"),
        "the NAT verdicts beside the command that reads the ruleset",
    ),
    "registry/compiled.py": (
        ("tests/commands/test_check.py",),
        "the compiled form equals the YAML's registry, unit by unit",
    ),
    "registry/entries.py": (("tests/registry/test_model.py",), "the model's value types"),
    "registry/fastreader.py": (
        ("tests/commands/test_generator.py", "tests/commands/test_generator_fuzz.py"),
        "the generator's reader, held to lint over 20,000 inputs",
    ),
    "registry/findings.py": (("tests/registry/test_lint.py",), "lint's finding type"),
    "registry/keys.py": (("tests/registry/test_schema.py",), "one table the readers share"),
    "registry/yamlfile.py": (
        ("tests/registry/test_model.py",),
        "the node reader under the model's file:line:col",
    ),
}


def mirror(module: Path) -> list[Path]:
    """Where MODULE's own tests would be."""
    relative = module.relative_to(PACKAGE)
    place = TESTS / relative.parent
    names = [f"test_{module.stem}.py"]
    if relative.parts[0] == "cli":
        names.insert(0, f"test_cli_{module.stem}.py")
    return [place / name for name in names]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_its_mirror_or_says_where_it_is_tested() -> None:
    missing = [
        str(m.relative_to(PACKAGE)) for m in modules()
        if not any(t.exists() for t in mirror(m))
        and str(m.relative_to(PACKAGE)) not in TESTED_ELSEWHERE
    ]  # fmt: skip
    assert missing == []


def test_every_line_below_names_real_tests_and_is_still_needed() -> None:
    for name, (files, reason) in TESTED_ELSEWHERE.items():
        module = PACKAGE / name
        assert module.exists(), f"{name}: no such module"
        assert not any(t.exists() for t in mirror(module)), f"{name} has its mirror now"
        assert reason, name
        for file in files:
            assert (CHECKOUT / file).exists(), f"{name}: {file} does not exist"

"""`portguard lint [FILE...]`: validate registry files."""

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portguard.cli import exit_codes
from portguard.errors import Exit

if TYPE_CHECKING:
    from portguard.registry.entries import RegistrySource
    from portguard.registry.findings import Finding
    from portguard.registry.localports import LocalPorts

EXITS = {0: "valid (warnings allowed)", 78: "invalid, or no registry file found"}
HOST = "host"
NONE = "none"


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "lint",
        parents=[common],
        help="validate registry files",
        description="Validate registry files: schema, overlapping claims, ephemeral-range "
        "clashes. Needs no root, no systemd and no installed registry when given files.",
        epilog=exit_codes(EXITS),
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="registry files (the first is the main one) or one registry "
        "directory; default: the installed registry",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--whole",
        action="store_true",
        help="lint the whole registry each FILE belongs to (a registry.yaml or registry.d/ "
        "file stands for its root: both read together), each once (for pre-commit)",
    )
    parser.add_argument(
        "--ephemeral-range",
        type=_ephemeral_range,
        metavar="LOW-HIGH|host|none",
        help="warn of claims in this ephemeral port range; 'host': this kernel's range and "
        "reserved ports (the default for the installed registry); 'none': no such warnings "
        "(the default for files given, which may be for another host)",
    )
    parser.add_argument(
        "--target-version",
        type=_release,
        metavar="X.Y",
        help="also fail on keys an older portguard does not know (it would refuse the whole "
        "registry, and its generator guard nothing): the oldest release your fleet runs",
    )
    parser.set_defaults(handler=run)


def _release(text: str) -> tuple[int, int]:
    from portguard import __version__  # noqa: PLC0415
    from portguard.registry.keys import FIRST_RELEASE  # noqa: PLC0415

    major, dot, minor = text.partition(".")
    minor = minor.split(".")[0]  # 0.1.0 is 0.1
    if dot and major.isdigit() and minor.isdigit():
        release = (int(major), int(minor))
        if release >= FIRST_RELEASE:
            return release
    first = ".".join(map(str, FIRST_RELEASE))
    raise argparse.ArgumentTypeError(
        f"'{text}' is not a portguard release X.Y from {first} on (this is {__version__})"
    )


def _ephemeral_range(text: str) -> str | tuple[int, int]:
    if text in (HOST, NONE):
        return text
    low, dash, high = text.partition("-")
    if dash and low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535:
        return int(low), int(high)
    raise argparse.ArgumentTypeError(
        f"'{text}' is not LOW-HIGH (two ports 1-65535, the lower first), host or none"
    )


def run(args: argparse.Namespace) -> int:
    # The YAML reader and the overlap rules load only when lint runs: every other verb
    # builds this parser too, `check` on a busy port among them.
    from portguard.registry.entries import REGISTRY_DIR, RegistrySource  # noqa: PLC0415

    paths: list[Path] = args.files or [args.registry or REGISTRY_DIR]
    if args.whole:
        sources = list(dict.fromkeys(RegistrySource.containing(path) for path in paths))
    else:
        sources = [RegistrySource.from_paths(paths)]
    installed = not args.whole and paths == [REGISTRY_DIR]
    local_ports = _local_ports(args.ephemeral_range or (HOST if installed else NONE))
    reports = [_lint(source, local_ports, args.target_version) for source in sources]
    if args.json:
        data = [_as_data(source, units, findings) for source, units, findings in reports]
        print(json.dumps(data if args.whole else data[0], indent=2))
    else:
        for source, units, findings in reports:
            for finding in findings:
                print(finding)
            _summary(source, units, findings)
    invalid = any(not source.files or _errors(findings) for source, _, findings in reports)
    return int(Exit.CONFIG if invalid else Exit.OK)


def _lint(
    source: "RegistrySource", local_ports: "LocalPorts | None", target: tuple[int, int] | None
) -> "tuple[RegistrySource, int, tuple[Finding, ...]]":
    from portguard.registry.lint import check_registry  # noqa: PLC0415
    from portguard.registry.model import load  # noqa: PLC0415

    loaded = load(source)
    return source, len(loaded.registry.units), check_registry(loaded, local_ports, target)


def _local_ports(choice: str | tuple[int, int]) -> "LocalPorts | None":
    """The ephemeral range to judge by: the running kernel's only when asked (or for the
    installed registry), since a CI machine's says nothing of the hosts a registry is for."""
    from portguard.host.sysctl import read_local_ports  # noqa: PLC0415
    from portguard.registry.localports import LocalPorts, PortSet  # noqa: PLC0415

    if choice == HOST:
        return read_local_ports()
    if choice == NONE:
        return None
    assert isinstance(choice, tuple)
    return LocalPorts(choice, PortSet())


def _errors(findings: "tuple[Finding, ...]") -> int:
    return sum(f.severity == "error" for f in findings)


def _summary(source: "RegistrySource", units: int, findings: "tuple[Finding, ...]") -> None:
    errors = _errors(findings)
    warnings = len(findings) - errors
    files = len(source.files)
    if not files:
        print("portguard: no registry files given or found", file=sys.stderr)
        return
    verdict = "invalid" if errors else "valid"
    print(
        f"{verdict}: {units} unit{'s' * (units != 1)} in {files} file{'s' * (files != 1)}, "
        f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}",
        file=sys.stderr,
    )


def _as_data(
    source: "RegistrySource", units: int, findings: "tuple[Finding, ...]"
) -> dict[str, Any]:
    return {
        "valid": bool(source.files) and not any(f.severity == "error" for f in findings),
        "files": [str(p) for p in source.files],
        "units": units,
        "findings": [_finding_data(f) for f in findings],
    }


def _finding_data(finding: "Finding") -> dict[str, Any]:
    data: dict[str, Any] = {
        "severity": str(finding.severity),
        "file": finding.location.path,
        "line": finding.location.line,
        "column": finding.location.column,
        "rule": finding.rule,
        "message": finding.message,
    }
    if finding.members:  # a group of overlapping claims: each of them, the message names few
        data["members"] = [
            {"unit": m.unit, "claim": m.claim, "file": m.location.path, "line": m.location.line,
             "column": m.location.column}
            for m in finding.members
        ]  # fmt: skip
    return data

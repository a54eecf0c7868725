"""`portguard lint [FILE...]`: validate registry files."""

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portguard.errors import Exit

if TYPE_CHECKING:
    from portguard.registry.entries import RegistrySource
    from portguard.registry.findings import Finding


def register(verbs: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser(
        "lint",
        parents=[common],
        help="validate registry files",
        description="Validate registry files: schema, overlapping claims, ephemeral-range "
        "clashes. Exit 0 when valid, 78 when not.",
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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # The YAML reader and the overlap rules load only when lint runs: every other verb
    # builds this parser too, `check` on a busy port among them.
    from portguard.host.sysctl import read_local_ports  # noqa: PLC0415
    from portguard.registry.entries import REGISTRY_DIR, RegistrySource  # noqa: PLC0415
    from portguard.registry.findings import Severity  # noqa: PLC0415
    from portguard.registry.lint import check_registry  # noqa: PLC0415
    from portguard.registry.model import load  # noqa: PLC0415

    paths: list[Path] = args.files or [args.registry or REGISTRY_DIR]
    source = RegistrySource.from_paths(paths)
    loaded = load(source)
    findings = check_registry(loaded, read_local_ports())
    errors = sum(f.severity is Severity.ERROR for f in findings)
    if args.json:
        print(json.dumps(_as_data(source, len(loaded.registry.units), findings), indent=2))
    else:
        for finding in findings:
            print(finding)
        _summary(source, len(loaded.registry.units), findings)
    return int(Exit.CONFIG if errors or not source.files else Exit.OK)


def _summary(source: "RegistrySource", units: int, findings: "tuple[Finding, ...]") -> None:
    errors = sum(f.severity == "error" for f in findings)
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
        "findings": [
            {
                "severity": str(f.severity),
                "file": f.location.path,
                "line": f.location.line,
                "column": f.location.column,
                "rule": f.rule,
                "message": f.message,
            }
            for f in findings
        ],
    }

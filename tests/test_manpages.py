"""The man pages (packaging/*.scd) say what the code does, and render as lintian wants.

The sources are read as text against the argparse parser, errors.py, report.py and the
registry's lint rules, so a new verb, option, exit code, verdict or rule without its
documentation fails here. Rendering needs scdoc and man-db/groff: skipped without them,
except under CI=true, where a missing tool fails.
"""

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from portguard.errors import Exit
from portguard.policy.report import EXIT, MESSAGE_ID
from portguard.registry.collisions import Rule
from tests.cli_surface import common_options, options, top_level_options, verbs

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "packaging").glob("*.scd"))
PORTGUARD_8 = ROOT / "packaging" / "portguard.8.scd"
REGISTRY_5 = ROOT / "packaging" / "portguard-registry.5.scd"
# Pages of packages portguard depends on (systemd), which the catalog and units may cite.
EXTERNAL_PAGES = {"systemd.exec(5)", "systemd.kill(5)", "systemd.resource-control(5)"}
MAN_REFERENCE = re.compile(r"man:([\w.@:-]+\(\d\w*\))")


def sections(path: Path, level: str = "#") -> dict[str, str]:
    """The page's sections by heading (`#` or `##`), with literal blocks left out of headings."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    literal = False
    for line in path.read_text(encoding="utf-8").splitlines():
        literal ^= line.strip() == "```"
        if not literal and line.startswith(f"{level} "):
            current = found.setdefault(line[len(level) + 1 :].strip(), [])
        elif not literal and level == "##" and line.startswith("# "):
            current = []
        else:
            current.append(line)
    return {title: "\n".join(lines) for title, lines in found.items()}


def plain(text: str) -> str:
    """scdoc source without its bold/underline marks: `*--json*`, `_PORT_[/_PROTO_]`."""
    text = re.sub(r"(?<!\\)\*", "", text)
    text = re.sub(r"(?<![A-Za-z0-9\\])_|_(?![A-Za-z0-9])", "", text)
    return re.sub(r"\\(.)", r"\1", text)


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", plain(text)) is not None


def defined(text: str) -> set[str]:
    """Options given their own entry: a term line such as `*-h*, *--help*` or `*--root* _DIR_`."""
    terms = (line for line in text.splitlines() if line.startswith("*-"))
    return {word for line in terms for word in re.findall(r"(?<![\w-])--?\w[\w-]*", plain(line))}


def test_every_verb_has_its_section_and_synopsis() -> None:
    commands = sections(PORTGUARD_8, "##")
    synopsis = plain(sections(PORTGUARD_8)["SYNOPSIS"])
    for verb in verbs():
        assert verb in commands, f"no '## {verb}' under COMMANDS"
        assert f"portguard {verb}" in synopsis, f"{verb} is not in SYNOPSIS"


def test_every_option_is_documented_where_it_applies() -> None:
    common = common_options()
    page = sections(PORTGUARD_8)
    for option in common | top_level_options():  # the latter before the verb: --version
        assert option in defined(page["COMMON OPTIONS"]), f"{option} not in COMMON OPTIONS"
    commands = sections(PORTGUARD_8, "##")
    for verb, parser in verbs().items():
        for option in options(parser) - common:
            assert option in defined(commands.get(verb, "")), f"{verb} {option} not documented"
            assert mentions(page["SYNOPSIS"], option), f"{verb} {option} not in SYNOPSIS"


def test_every_argument_and_choice_is_documented() -> None:
    commands = sections(PORTGUARD_8, "##")
    for verb, parser in verbs().items():
        for action in parser._actions:
            if not action.option_strings:
                assert isinstance(action.metavar, str), f"{verb} {action.dest}: set a metavar"
                assert action.metavar in plain(commands.get(verb, "")), f"{verb} {action.metavar}"
            for choice in action.choices or ():
                assert mentions(commands.get(verb, ""), str(choice)), f"{verb} choice {choice}"


def test_every_exit_code_is_documented() -> None:
    status = sections(PORTGUARD_8)["EXIT STATUS"]
    for code in Exit:
        line = re.search(rf"^\*{int(code)}\*(.*)$", status, re.MULTILINE)
        assert line, f"exit {int(code)} ({code.name}) is not in EXIT STATUS"
        if code >= 64:  # sysexits: systemctl status shows the name
            assert code.name in line.group(1), f"exit {int(code)} is not named {code.name}"


def test_every_verdict_and_message_id_is_documented() -> None:
    page = sections(PORTGUARD_8)
    for verdict, code in EXIT.items():
        assert f"*{verdict}* ({int(code)})" in page["VERDICTS"], f"{verdict} ({int(code)})"
    for verdict, message_id in MESSAGE_ID.items():
        found = re.search(rf"^{verdict} +{message_id}$", page["JOURNAL"], re.MULTILINE)
        assert found, f"{verdict} {message_id} is not in JOURNAL"


def lint_rules() -> set[str]:
    """Every rule name the registry's readers can report, from their source."""
    positions = {"report": 1, "_error": 1, "Finding": 3}  # where the rule is in each call
    rules = set()
    for name in ("yamlfile.py", "model.py", "lint.py"):
        source = ROOT / "src" / "portguard" / "registry" / name
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            func = call.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            index = positions.get(called)
            if index is not None and len(call.args) > index:
                rule = call.args[index]
                if isinstance(rule, ast.Constant) and isinstance(rule.value, str):
                    rules.add(rule.value)
    # The overlap rules are a closed set of words, which lint.py passes on by name.
    return rules | {str(rule) for rule in Rule}


def test_every_lint_rule_is_documented() -> None:
    rules = lint_rules()
    assert {"yaml", "overlap", "ephemeral"} <= rules  # the scan still finds them
    lint = sections(REGISTRY_5)["LINT"]
    for rule in rules:
        assert re.search(rf"^\*{re.escape(rule)}\*", lint, re.MULTILINE), f"rule {rule}"


def shipped_pages() -> set[str]:
    pages = set()
    for source in SOURCES:
        preamble = source.read_text(encoding="utf-8").split("\n", 1)[0]
        match = re.match(r"([\w.@-]+)\((\d)\) ", preamble)
        assert match, f"{source.name}: the first line is not 'name(section) ...'"
        assert source.name == f"{match[1]}.{match[2]}.scd", f"{source.name}: {preamble}"
        pages.add(f"{match[1]}({match[2]})")
    return pages


def test_every_man_reference_resolves() -> None:
    ours = shipped_pages()
    assert {"portguard(8)", "portguard-registry(5)", "portguard-generator(8)"} <= ours
    files = [p for d in ("systemd", "src") for p in (ROOT / d).rglob("*") if p.is_file()]
    cited = {
        (path.relative_to(ROOT), page)
        for path in files
        if "__pycache__" not in path.parts
        for page in MAN_REFERENCE.findall(path.read_text(encoding="utf-8", errors="replace"))
    }
    assert any(page == "portguard(8)" for _, page in cited)
    unresolved = sorted(
        f"{p}: man:{page}" for p, page in cited if page not in ours | EXTERNAL_PAGES
    )
    assert not unresolved, "no such page shipped:\n" + "\n".join(unresolved)
    for source in SOURCES:  # our pages' own references to each other
        for name in re.findall(r"\*(portguard[\w-]*)\*\((\d)\)", source.read_text("utf-8")):
            assert f"{name[0]}({name[1]})" in ours, f"{source.name} cites {name}"


# --- rendering (scdoc, then man-db and groff, as lintian runs them) ---------------------------


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"needs {', '.join(missing)} (Debian packages scdoc, man-db, groff-base)"
    if os.environ.get("CI") == "true":  # CI must not turn green on a check that did not run
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def render(source: Path, directory: Path) -> Path:
    require("scdoc")
    page = directory / source.name.removesuffix(".scd")
    with source.open("rb") as stdin, page.open("wb") as stdout:
        done = subprocess.run(["scdoc"], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                              timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, f"scdoc < {source.name}: {done.stderr.decode()}"
    return page


MAN_ENV = {**os.environ, "LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": "80"}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_page_renders_without_warnings(source: Path, tmp_path: Path) -> None:
    page = render(source, tmp_path)
    require("man", "groff")
    argv = ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(page)]
    done = subprocess.run(argv, env=MAN_ENV, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0 and not done.stderr, done.stderr


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_page_reads_as_a_man_page(source: Path, tmp_path: Path) -> None:
    page = render(source, tmp_path)
    require("man", "groff")
    done = subprocess.run(["man", "-l", "-P", "cat", str(page)], env=MAN_ENV,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = re.sub(r".\x08", "", done.stdout)  # overstrike bold/underline, if any
    name = page.name.rsplit(".", 1)[0]
    headings = re.findall(r"^([A-Z][A-Z ]+)$", text, re.MULTILINE)
    assert headings[:3] == ["NAME", "SYNOPSIS", "DESCRIPTION"], headings
    assert re.search(rf"^NAME\n +{re.escape(name)} - \w", text, re.MULTILINE), text[:300]
    if shutil.which("lexgrog"):  # what mandb and lintian read for whatis
        whatis = subprocess.run(["lexgrog", str(page)], capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        assert f'"{name} - ' in whatis.stdout, whatis.stdout + whatis.stderr

"""The package's autopkgtest (debian/tests/control) run inside a booted root, offline.

Not autopkgtest itself: no testbed to set up, nothing to download. The root already has the
package installed and, from tools/roots, every dependency the tests declare; a dependency it
lacks, or a restriction this runner cannot honour, fails the test rather than skipping it.
The rules followed are those of autopkgtest's README.package-tests: tests run from the source
tree with AUTOPKGTEST_TMP set to a fresh directory, and without allow-stderr any output on
stderr fails a test. Every test runs as root.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from tests.system.debroot import package_status
from tests.system.sandbox import CommandTimeout, Sandbox

CONTROL = Path("debian/tests/control")
TIMEOUT = 900.0
# In a scope of the sandbox's systemd, as a login would be: a process merely nsenter'd in stays
# in the test runner's cgroup, outside the sandbox's hierarchy, which no real testbed does.
SCOPE = ("systemd-run", "--scope", "--quiet", "--collect", "--")
INSTALLED = "install ok installed"

# Restrictions a sandbox running everything as root in a booted system fulfils. Anything else
# (needs-internet, build-needed, isolation-machine, needs-sudo, ...) is refused, not skipped;
# so is skippable: here a test that did not run must not pass.
HONOURED = frozenset({
    "allow-stderr", "breaks-testbed", "flaky", "hint-testsuite-triggers", "isolation-container",
    "needs-root", "rw-build-tree", "superficial",
})  # fmt: skip


@dataclass(frozen=True)
class PackageTest:
    """One test of debian/tests/control."""

    name: str
    argv: tuple[str, ...]  # run from the source tree
    depends: str
    restrictions: frozenset[str]


@dataclass(frozen=True)
class Outcome:
    test: PackageTest
    returncode: int | None  # None: refused before it ran, or timed out
    stdout: str
    stderr: str
    elapsed: float
    problem: str | None  # why it failed; None when it passed


def stanzas(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs: field names lower-cased, continuation lines joined with newlines."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    field = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, field = {}, ""
        elif line[0] in " \t" and field:
            current[field] += "\n" + line.strip()
        else:
            name, _, value = line.partition(":")
            field = name.strip().lower()
            current[field] = value.strip()
    return paragraphs


def words(value: str) -> list[str]:
    return [word for word in re.split(r"[\s,]+", value) if word]


def parse_control(text: str) -> list[PackageTest]:
    tests: list[PackageTest] = []
    for number, stanza in enumerate(stanzas(text), start=1):
        depends = stanza.get("depends", "@")
        restrictions = frozenset(words(stanza.get("restrictions", "")))
        if "test-command" in stanza:
            argv = ("sh", "-c", stanza["test-command"])
            tests.append(PackageTest(f"command{number}", argv, depends, restrictions))
            continue
        directory = stanza.get("tests-directory", "debian/tests")
        for name in words(stanza.get("tests", "")):
            tests.append(PackageTest(name, (f"{directory}/{name}",), depends, restrictions))
    return tests


def alternatives(depends: str) -> list[list[str]]:
    """Package names of a Depends: field, one list of alternatives per comma-separated item."""
    items = []
    for item in depends.split(","):
        # Drop version constraints, architecture qualifiers and build profiles.
        bare = re.sub(r"\([^)]*\)|\[[^]]*\]|<[^>]*>", " ", item)
        names = [words(choice)[0].split(":")[0] for choice in bare.split("|") if words(choice)]
        if names:
            items.append(names)
    return items


def refusal(sandbox: Sandbox, test: PackageTest) -> str | None:
    """Why TEST cannot run in this root, or None when it can."""
    unknown = sorted(test.restrictions - HONOURED)
    if unknown:
        return f"Restrictions: {' '.join(unknown)} cannot be honoured in the sandbox"
    for names in alternatives(test.depends):
        if names == ["@"]:
            continue  # the package itself, installed already
        if any(name.startswith("@") for name in names):
            return f"Depends: {' | '.join(names)} is not supported offline"
        if not any(package_status(sandbox, name) == INSTALLED for name in names):
            return (
                f"Depends: {' | '.join(names)} is not installed in the root "
                "(add it to the include list in tools/roots)"
            )
    return None


def run(sandbox: Sandbox, test: PackageTest, source: Path, timeout: float = TIMEOUT) -> Outcome:
    """Run TEST inside SANDBOX from the source tree SOURCE, in a fresh AUTOPKGTEST_TMP."""
    refused = refusal(sandbox, test)
    if refused is not None:
        return Outcome(test, None, "", "", 0.0, refused)
    scratch = sandbox.run("mktemp", "-d", "/tmp/autopkgtest.XXXXXX").stdout.strip()
    env = {"AUTOPKGTEST_TMP": scratch, "ADTTMP": scratch, "HOME": "/root",
           "DEBIAN_FRONTEND": "noninteractive"}  # fmt: skip
    started = time.monotonic()
    try:
        done = sandbox.run(*SCOPE, "env", "-C", str(source), *test.argv, env=env,
                           check=False, timeout=timeout)  # fmt: skip
    except CommandTimeout as error:
        return Outcome(test, None, error.stdout, error.stderr, time.monotonic() - started,
                       f"timed out after {timeout:g} s")  # fmt: skip
    finally:
        sandbox.run("rm", "-rf", "--", scratch)
    elapsed = time.monotonic() - started
    problem = None
    if done.returncode != 0:
        problem = f"exit status {done.returncode}"
    elif done.stderr and "allow-stderr" not in test.restrictions:
        problem = "output on stderr (no allow-stderr)"
    return Outcome(test, done.returncode, done.stdout, done.stderr, elapsed, problem)


def describe(outcome: Outcome) -> str:
    """A report of one test: its verdict, and the output when it failed."""
    test = outcome.test
    verdict = "PASS" if outcome.problem is None else "FAIL"
    head = f"{test.name}: {verdict} in {outcome.elapsed:.1f} s ({shlex.join(test.argv)})"
    if outcome.problem is None:
        return head
    return (
        f"{head}: {outcome.problem}\n--- stdout:\n{outcome.stdout.rstrip()}\n"
        f"--- stderr:\n{outcome.stderr.rstrip()}"
    )

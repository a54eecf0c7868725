"""The rule of tests/unprivileged.py: a child that drops root never runs from the checkout.

Issue 23: from a clone below a directory only root may enter (/root, a `mktemp -d`), six tests
failed with "No module named portguard" because a child running as nobody was pointed into the
checkout. These tests hold the two fences that keep it from coming back, from any checkout
location: every privilege drop is spelled in one module, and the places children are made
refuse a dropping command or a non-root unit that names the checkout.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.guarded import CODE, PYTHON
from tests.system.sandbox import Sandbox
from tests.unprivileged import (
    CHECKOUT,
    CheckoutUnreadable,
    drops_privilege,
    refuse_checkout,
    unit_drops_privilege,
)

SRC = f"{CHECKOUT}/src"
# The sandbox's launcher drops CAP_SYS_MODULE from the bounding set with setpriv; it stays root.
SPELLED_ELSEWHERE = {
    "tests/system/sandbox.py": "setpriv --bounding-set: the launcher stays root",
    "tests/system/conftest.py": "shutil.which('setpriv'): whether the tool is there",
    "tests/test_unprivileged.py": "this file: the forms the rule must refuse",
}
DROPPING_WORDS = ("setpriv", "runuser", "su", "sudo")


def literal_words(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, first word) of every string literal, also the literal parts of f-strings."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
            yield node.lineno, node.value.split()[0]


def user_keywords(tree: ast.AST) -> Iterator[int]:
    """Lines of calls with `user=`: subprocess's own way to drop root."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and any(k.arg == "user" for k in node.keywords):
            callee = ast.unparse(node.func)
            if callee.startswith("subprocess.") or callee in ("run", "Popen", "check_output"):
                yield node.lineno


def python_files() -> list[Path]:
    return sorted(p for d in ("tests", "bench") for p in (CHECKOUT / d).rglob("*.py"))


def test_every_privilege_drop_is_spelled_in_one_module() -> None:
    found = []
    for path in python_files():
        name = str(path.relative_to(CHECKOUT))
        if name == "tests/unprivileged.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), name)
        for line, word in literal_words(tree):
            if word in DROPPING_WORDS and name not in SPELLED_ELSEWHERE:
                found.append(f"{name}:{line}: {word!r}")
        found += [f"{name}:{line}: subprocess user=" for line in user_keywords(tree)]
    assert found == [], (
        "run children as another user through tests/unprivileged.py (run_as, setpriv, login) "
        "or tests/system/guarded.as_user, which keep them out of the checkout:\n" + "\n".join(found)
    )


# The forms the six tests of issue 23 had: each names the checkout in a child that drops root.
OLD_RESERVE = (
    *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
    *("env", f"PYTHONPATH={SRC}", PYTHON, "-m", "portguard", "reserve", "--apply"),
)
OLD_GUARDED_UNIT = (
    f"[Service]\nEnvironment=PYTHONPATH={SRC}\nExecStartPre={PYTHON} -m portguard check\n"
    "ExecStart=/bin/sleep infinity\nUser=nobody\n"
)
OLD_PYPI_UNIT = (
    f"[Service]\nEnvironment=PYTHONPATH={CODE}\n"
    f"ExecStartPre={CHECKOUT}/.venv-pypi/bin/python -m portguard check\n"
    "ExecStart=/bin/sleep infinity\nUser=nobody\n"
)


def nowhere() -> Sandbox:
    """A Sandbox that was never booted: anything that reached nsenter would fail loudly."""
    return Sandbox(pid=2**22 + 1, cgroup=Path("/nonexistent"), launcher_pid=2**22 + 1)


def test_the_sandbox_refuses_a_dropping_command_into_the_checkout() -> None:
    with pytest.raises(CheckoutUnreadable, match="drops root names the checkout"):
        nowhere().run(*OLD_RESERVE, check=False)
    with pytest.raises(CheckoutUnreadable):
        nowhere().run("setpriv", "--reuid=65534", PYTHON, "-m", "portguard", "why", "80",
                      env={"PYTHONPATH": SRC})  # fmt: skip
    with pytest.raises(CheckoutUnreadable):
        nowhere().run("sh", "-c", f"runuser -l alice -c 'PYTHONPATH={SRC} portguard why 80'")


OLD_DYNAMIC_UNIT = OLD_GUARDED_UNIT.replace("User=nobody", "DynamicUser=yes")


@pytest.mark.parametrize("text", [OLD_GUARDED_UNIT, OLD_PYPI_UNIT, OLD_DYNAMIC_UNIT])
def test_the_sandbox_refuses_a_unit_of_another_user_that_names_the_checkout(text: str) -> None:
    with pytest.raises(CheckoutUnreadable, match="runs as another user names the checkout"):
        nowhere().write_unit("myapp.service", text)
    with pytest.raises(CheckoutUnreadable):
        nowhere().write_file("/etc/systemd/system/myapp.service.d/50-test.conf", text)


def test_what_root_runs_and_the_readable_copy_pass() -> None:
    # Root may run the checkout; nobody may run the copy.
    refuse_checkout(("env", f"PYTHONPATH={SRC}", PYTHON, "-m", "portguard", "why", "80"))
    refuse_checkout(unit=OLD_GUARDED_UNIT.replace("User=nobody", "User=root"))
    refuse_checkout(unit=OLD_GUARDED_UNIT.replace("User=nobody", "User=0"))
    refuse_checkout(unit=OLD_GUARDED_UNIT.replace(SRC, CODE))
    refuse_checkout(("setpriv", "--reuid=65534", PYTHON, "-m", "portguard"), {"PYTHONPATH": CODE})
    # The sandbox's launcher: setpriv that leaves the user alone.
    refuse_checkout(("setpriv", "--bounding-set", "-sys_module", "unshare", str(CHECKOUT)))


@pytest.mark.parametrize(
    ("argv", "drops"),
    [
        (("setpriv", "--reuid=65534", "id"), True),
        (("/usr/bin/setpriv", "--euid", "1", "id"), True),
        (("setpriv", "--bounding-set", "-sys_module", "id"), False),
        (("runuser", "-l", "alice", "-c", "id"), True),
        (("sh", "-c", "su - alice -c id"), True),
        (("systemd-run", "--uid=nobody", "id"), True),
        (("systemd-run", "-p", "User=nobody", "id"), True),
        (("systemd-run", "--unit=x", "id"), False),
        (("env", "PYTHONPATH=/x", "python3"), False),
    ],
)
def test_drops_privilege(argv: tuple[str, ...], drops: bool) -> None:
    assert drops_privilege(argv) is drops


@pytest.mark.parametrize(
    ("text", "drops"),
    [
        ("[Service]\nUser=nobody\n", True),
        ("[Service]\nDynamicUser=yes\n", True),
        ("[Service]\nUser=root\n", False),
        ("[Service]\nUser=\n", False),
        ("[Service]\nDynamicUser=no\n", False),
        ("[Service]\nExecStart=/bin/true\n", False),
    ],
)
def test_unit_drops_privilege(text: str, drops: bool) -> None:
    assert unit_drops_privilege(text) is drops

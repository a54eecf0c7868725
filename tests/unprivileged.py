"""The one way the suite runs code as another user, and the rule every such child keeps.

A child that drops root cannot traverse a checkout that lies below a directory only root may
enter (/root, any `mktemp -d`), so it is never pointed into the checkout: on the host it
imports `readable_src` (tests/conftest.py), inside a sandbox the copy `CODE` of
tests/system/guarded.py, and the PyPI venv lives outside every checkout (tools/setup).

Every privilege drop of the suite is spelled here, and `refuse_checkout` holds the rule where
children are made (`run_as` here, `Sandbox.run` and `Sandbox.write_file` for units): a command
line that drops root, or a unit that runs as another user, and names a path inside the
checkout is refused before anything runs, wherever the checkout happens to sit today.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent

# Programs whose whole job is to run a command as another user.
_DROPPING = frozenset({"runuser", "su", "sudo", "setpriv"})
# setpriv also changes other things (the bounding set, as the sandbox's launcher does); only
# these options change the user.
_SETPRIV_USER = ("--reuid", "--ruid", "--euid")
# systemd-run as another user: --uid=U, -p User=U, --property=User=U.
_SYSTEMD_RUN_USER = re.compile(r"^(--uid(=|$)|(-p|--property=?)?User=)")
# A unit's own lines that make its commands run as someone other than root.
_UNIT_USER = re.compile(r"^\s*(User=(?!\s*(root|0)?\s*$)|DynamicUser=\s*(yes|true|on|1)\s*$)",
                        re.MULTILINE | re.IGNORECASE)  # fmt: skip


class CheckoutUnreadable(AssertionError):
    """A child that drops root was pointed into the checkout, which it may not reach."""


def _words(argv: Sequence[str]) -> list[str]:
    """Every word of ARGV, also inside `sh -c '…'` strings."""
    return [word for arg in argv for word in arg.split()]


def drops_privilege(argv: Sequence[str]) -> bool:
    """Whether ARGV runs (part of) its command as another user."""
    words = _words(argv)
    programs = {os.path.basename(word) for word in words}
    if programs & (_DROPPING - {"setpriv"}):
        return True
    if "setpriv" in programs and any(w.startswith(_SETPRIV_USER) for w in words):
        return True
    return "systemd-run" in programs and any(_SYSTEMD_RUN_USER.match(w) for w in words)


def unit_drops_privilege(text: str) -> bool:
    """Whether a unit file's TEXT runs its commands as a user other than root."""
    return _UNIT_USER.search(text) is not None


def _checkout_paths() -> tuple[str, ...]:
    paths = {str(CHECKOUT), os.path.realpath(CHECKOUT)}
    return tuple(sorted(paths))


def naming_checkout(values: Iterable[str]) -> list[str]:
    """The VALUES that name a path inside the checkout."""
    paths = _checkout_paths()
    return [value for value in values if any(path in value for path in paths)]


def refuse_checkout(
    argv: Sequence[str] = (), env: Mapping[str, str] | None = None, *, unit: str | None = None
) -> None:
    """Raise CheckoutUnreadable when ARGV (with ENV) or the unit text UNIT runs as another
    user and names the checkout; return quietly otherwise."""
    if argv and drops_privilege(argv):
        named = naming_checkout([*argv, *(env or {}).values()])
        if named:
            raise CheckoutUnreadable(
                f"a command that drops root names the checkout ({named[0]!r}), which that user "
                f"may not reach (a clone under /root): {' '.join(argv)}. Run the readable copy: "
                "tests.unprivileged.run_as on the host, tests.system.guarded.as_user in a sandbox"
            )
    if unit is not None and unit_drops_privilege(unit):
        named = naming_checkout(unit.splitlines())
        if named:
            raise CheckoutUnreadable(
                f"a unit that runs as another user names the checkout ({named[0].strip()!r}), "
                "which that user may not reach (a clone under /root); point it at "
                "tests.system.guarded.CODE"
            )


def setpriv(user: int | str, argv: Sequence[str]) -> list[str]:
    """ARGV as USER (uid or name) with its own group and no supplementary groups."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]


def login(user: str, command: str) -> list[str]:
    """COMMAND in a login shell of USER: a real PAM session (pam_systemd's session-N.scope)."""
    return ["runuser", "-l", user, "-c", command]


# A child that drops root gets this environment plus what the caller adds, never the test
# runner's own (whose PWD and PATH may name the checkout).
BASE_ENV: Mapping[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run_as(
    user: int | str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """ARGV run on the host as USER in BASE_ENV plus ENV, after the checkout rule; output
    captured as text, bounded, in /, its status not checked; `subprocess.run`'s other
    arguments as given."""
    command = setpriv(user, argv)
    full_env = {**BASE_ENV, **(env or {})}
    refuse_checkout(command, full_env)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("cwd", "/")
    return subprocess.run(command, env=full_env, text=True, check=False, **kwargs)

"""Helpers for tests of the guard inside a sandbox: registries, guarded units, the guard's entry."""

from __future__ import annotations

import shlex
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from tests.system.sandbox import JournalEntry, Sandbox, UnitResult, wait_for
from tests.unprivileged import setpriv

SRC = str(Path(__file__).resolve().parents[2] / "src")
PYTHON = "/usr/bin/python3"
GUARD = f"{PYTHON} -m portguard check"


def listener(host: str, port: int, *, proto: str = "tcp", v6only: bool | None = None,
             reuseaddr: bool = True) -> str:  # fmt: skip
    """An ExecStart= command line: a Python process that binds (and for TCP listens) forever."""
    family = "socket.AF_INET6" if ":" in host else "socket.AF_INET"
    kind = "socket.SOCK_STREAM" if proto == "tcp" else "socket.SOCK_DGRAM"
    lines = [f"import socket, time; s = socket.socket({family}, {kind})"]
    if reuseaddr:
        lines.append("s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)")
    if v6only is not None:
        lines.append(f"s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, {int(v6only)})")
    lines.append(f"s.bind(({host!r}, {port}))")
    if proto == "tcp":
        lines.append("s.listen()")
    lines.append("time.sleep(10**6)")
    return f"{PYTHON} -c {shlex.quote('; '.join(lines))}"


def write_registry(sandbox: Sandbox, text: str) -> None:
    sandbox.write_file("/etc/portguard/registry.yaml", textwrap.dedent(text).lstrip())


def guarded_unit(
    sandbox: Sandbox,
    name: str,
    *,
    exec_start: str,
    extra: str = "",
    guard: str = GUARD,
    description: str | None = None,
) -> None:
    """A service with the guard in ExecStartPre=, as the drop-in will write it, running the
    readable copy of the code (EXTRA may make it another user)."""
    install_code(sandbox)
    head = f"[Unit]\nDescription={description}\n\n" if description else ""
    sandbox.write_unit(
        name,
        head
        + textwrap.dedent(
            f"""\
            [Service]
            Environment=PYTHONPATH={CODE}
            ExecStartPre={guard}
            ExecStart={exec_start}
            """
        )
        + textwrap.dedent(extra),
    )


def plain_unit(sandbox: Sandbox, name: str, text: str) -> None:
    sandbox.write_unit(name, textwrap.dedent(text))


@dataclass(frozen=True)
class Guarded:
    result: UnitResult
    entries: list[JournalEntry]

    @property
    def entry(self) -> JournalEntry:
        """The one guard entry this start produced."""
        assert len(self.entries) == 1, self.entries
        return self.entries[0]


def start_guarded(sandbox: Sandbox, unit: str, *, timeout: float = 60) -> Guarded:
    """Start UNIT and collect the guard's journal entries for this start only."""
    cursor = sandbox.journal_cursor()
    result = sandbox.start(unit, timeout=timeout)
    entries = [e for e in sandbox.journal(unit, since_cursor=cursor) if "PORTGUARD_VERDICT" in e]
    return Guarded(result, entries)


def guard_start(
    sandbox: Sandbox,
    registry: str,
    unit: str = "myapp.service",
    *,
    exec_start: str = "/bin/sleep infinity",
    extra: str = "",
    guard: str = GUARD,
    timeout: float = 60,
) -> Guarded:
    """Install REGISTRY and a guarded UNIT, then start it: the usual shape of a guard test."""
    write_registry(sandbox, registry)
    guarded_unit(sandbox, unit, exec_start=exec_start, extra=extra, guard=guard)
    sandbox.daemon_reload()
    return start_guarded(sandbox, unit, timeout=timeout)


def wait_active(sandbox: Sandbox, unit: str, timeout: float = 10) -> None:
    wait_for(
        lambda: sandbox.unit_properties(unit, "ActiveState")["ActiveState"] == "active" or None,
        timeout=timeout,
        what=f"{unit} active",
    )


def wait_listening(sandbox: Sandbox, port: int, proto: str = "tcp", timeout: float = 10) -> None:
    flag = "-ltn" if proto == "tcp" else "-lun"

    def up() -> bool | None:
        out = sandbox.run("ss", "-H", flag, f"sport = :{port}").stdout
        return bool(out.strip()) or None

    wait_for(up, timeout=timeout, what=f"a listener on {port}/{proto}")


def elapsed(start: float) -> float:
    return time.monotonic() - start


def make_time_wait(sandbox: Sandbox, port: int) -> None:
    """Leave a server-side TIME-WAIT on PORT: the server closes first, then everything exits."""
    code = (
        "import socket; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); "
        f"c = socket.create_connection(('127.0.0.1', {port})); a, _ = s.accept(); "
        "a.close(); c.recv(1); c.close(); s.close()"
    )
    sandbox.run(PYTHON, "-c", code)
    out = sandbox.run("ss", "-Htn", "state", "time-wait", f"sport = :{port}").stdout
    assert out.strip(), "no TIME-WAIT socket was left"


def portguard(
    sandbox: Sandbox, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the checkout's portguard inside SANDBOX (as root); the result, whatever its status."""
    return sandbox.run(PYTHON, "-m", "portguard", *args, env={"PYTHONPATH": SRC},
                       check=False, timeout=timeout)  # fmt: skip


PORTGUARD_BIN = "/usr/bin/portguard"


# The code under test as every user and every unit inside a sandbox sees it: a copy under
# /usr, as the package puts it, readable by all. The checkout itself may lie below a directory
# only root may enter (/root, a `mktemp -d`), and one under /tmp is hidden from units with
# PrivateTmp=yes (the shipped units have it).
CODE = "/usr/lib/portguard-checkout"


def install_code(sandbox: Sandbox) -> None:
    """CODE inside SANDBOX (once: later calls find it there), readable by every user."""
    sandbox.run("sh", "-c", 'test -e "$1/portguard/__init__.py" || { mkdir -p "$1" && '
                'cp -r "$2/portguard" "$3/systemd" "$1" && chmod -R a+rX "$1"; }',
                "sh", CODE, SRC, str(Path(SRC).parent))  # fmt: skip


def as_user(
    sandbox: Sandbox,
    user: int | str,
    *argv: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """ARGV run inside SANDBOX as USER, with CODE importable; the result, whatever its status."""
    install_code(sandbox)
    return sandbox.run(*setpriv(user, argv), env={"PYTHONPATH": CODE, **(env or {})},
                       check=False, timeout=timeout)  # fmt: skip


def install_portguard(sandbox: Sandbox) -> None:
    """/usr/bin/portguard inside SANDBOX (its overlay, never the host's) running the checkout,
    as the package's bin/portguard does (a Python script, so `dropin` sees its own path):
    what drop-ins and the generator call.
    """
    install_code(sandbox)
    sandbox.write_file(
        PORTGUARD_BIN,
        f"#!{PYTHON} -I\nimport sys\nsys.path.insert(0, {CODE!r})\n"
        "from portguard.__main__ import main\nraise SystemExit(main())\n",
        mode=0o755,
    )


def dropin(sandbox: Sandbox, *args: str, env: dict[str, str] | None = None,
           user: int | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`portguard dropin ARGS` by the installed /usr/bin/portguard, which the drop-in will run."""
    install_portguard(sandbox)
    argv = [PORTGUARD_BIN, "dropin", *args]
    return sandbox.run(*(setpriv(user, argv) if user else argv), env=env or {}, check=False)


GENERATOR_BIN = "/etc/systemd/system-generators/portguard-generator"
_GENERATOR_ENTRY = f"{CODE}/systemd/portguard-generator"
CATALOG = Path(SRC).parent / "systemd" / "portguard.catalog"


def install_generator(sandbox: Sandbox) -> None:
    """The checkout's generator in SANDBOX's generator path, run as its shebang would (-I -B)."""
    install_code(sandbox)
    program = (
        f"import sys; sys.path.insert(0, {CODE!r}); "
        f"exec(compile(open({_GENERATOR_ENTRY!r}).read(), {_GENERATOR_ENTRY!r}, 'exec'), "
        "{'__name__': '__main__'})"
    )
    sandbox.write_file(
        GENERATOR_BIN, f'#!/bin/sh\nexec {PYTHON} -I -B -c "{program}" "$@"\n', mode=0o755
    )


def install_catalog(sandbox: Sandbox) -> None:
    """portguard's journal catalog, installed and compiled as the package does."""
    sandbox.write_file("/usr/lib/systemd/catalog/portguard.catalog", CATALOG.read_text())
    sandbox.run("journalctl", "--update-catalog")

"""A real systemd, booted as PID 1 of its own namespaces, for system tests.

`boot()` starts one sandbox and always tears it down; `Sandbox` runs commands inside it and
wraps the few systemctl and journalctl calls tests need. The recipe is /work/shared/SANDBOX.md:
a cgroup of its own under the host's cgroup2 mount, `unshare` into fresh PID, mount, UTS, IPC,
network and cgroup namespaces, and `sandbox-init` (beside this file) building an overlay root
over the host's `/` (or a prepared rootfs) before it execs systemd.

Stdlib only, so that it runs on the interpreter the package is tested with.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from tests.unprivileged import refuse_checkout

__all__ = [
    "CGROUP_PREFIX",
    "BootError",
    "CommandError",
    "CommandTimeout",
    "JournalEntry",
    "Sandbox",
    "SandboxError",
    "UnitResult",
    "WaitTimeout",
    "boot",
    "cgroup2_root",
    "reap_stale",
    "wait_for",
]

CGROUP_PREFIX = "portguard-sandbox-"
SANDBOX_INIT = Path(__file__).with_name("sandbox-init")
# The checkout, shown read-only at the same path inside, wherever it was cloned.
PROJECT = Path(__file__).resolve().parents[2]

# Commands inside get this environment rather than the test runner's, so that results do not
# depend on who runs the tests.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}

# How long teardown lets systemd shut down by itself before killing everything.
POWEROFF_TIMEOUT = 20.0

T = TypeVar("T")

JournalValue = str | list[str]
JournalEntry = dict[str, JournalValue]


class SandboxError(Exception):
    """Anything that went wrong with a sandbox."""


class BootError(SandboxError):
    """The sandbox did not reach `running`; the message says what failed."""


class CommandError(SandboxError):
    """A command inside the sandbox failed; carries its output."""

    def __init__(
        self, message: str, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str
    ) -> None:
        super().__init__(message)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class CommandTimeout(CommandError):
    """A command inside the sandbox did not finish in time and was killed."""


class WaitTimeout(SandboxError, TimeoutError):
    """`wait_for` gave up."""


@dataclass(frozen=True)
class UnitResult:
    """The outcome of `systemctl start` (or stop) and the unit's state right after it."""

    unit: str
    returncode: int
    active_state: str
    sub_state: str
    result: str
    main_pid: int
    exec_main_status: int
    status: str
    elapsed: float

    @property
    def active(self) -> bool:
        return self.active_state == "active"


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float, interval: float = 0.02, what: str = ""
) -> T:
    """Call `predicate` until it returns something truthy and return that; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what or predicate!r}")
        time.sleep(interval)


def cgroup2_root() -> Path | None:
    """Where the host's cgroup2 hierarchy is mounted (hybrid hosts: /sys/fs/cgroup/unified)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields, _, rest = line.partition(" - ")
            if rest.split(" ", 1)[0] == "cgroup2":
                return Path(_unescape_mountinfo(fields.split(" ")[4]))
    return None


def _unescape_mountinfo(path: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount points as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), path)


def _process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces and parentheses.
    return stat.rpartition(")")[2].split()[19]


def _process_state(pid: int) -> str | None:
    """The state letter of `pid` (R, S, Z, ...) or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _owner_tag() -> str:
    # The owner's PID and start time go into the cgroup's name so that reap_stale() can tell a
    # crashed run's leftovers from the live sandboxes of concurrent test runs.
    return f"{os.getpid()}-{_process_start_time(os.getpid())}"


def _owner_alive(name: str) -> bool:
    parts = name.removeprefix(CGROUP_PREFIX).split("-")
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    return _process_start_time(int(parts[0])) == parts[1]


def _kill_cgroup(cgroup: Path) -> None:
    try:
        (cgroup / "cgroup.kill").write_text("1")
    except FileNotFoundError:
        if cgroup.exists():
            # Kernels before 5.14 have no cgroup.kill: signal every member instead.
            for procs in cgroup.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def _remove_cgroup(cgroup: Path, timeout: float = 5.0) -> None:
    """Remove `cgroup` and its children, deepest first, killing whatever still lives there."""
    deadline = time.monotonic() + timeout
    killed = False
    while cgroup.exists():
        busy = False
        for directory, _, _ in sorted(os.walk(cgroup), key=lambda w: -len(Path(w[0]).parts)):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as error:
                if error.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                busy = True
        if not busy:
            continue
        if time.monotonic() >= deadline:
            raise SandboxError(f"cannot remove {cgroup}: processes remain in it")
        if not killed:
            _kill_cgroup(cgroup)
            killed = True
        time.sleep(0.02)


def reap_stale(root: Path | None = None) -> list[Path]:
    """Kill and remove sandbox cgroups whose owning test process is gone; return them."""
    root = root or cgroup2_root()
    if root is None:
        return []
    stale = [
        path
        for path in root.glob(f"{CGROUP_PREFIX}*")
        if path.is_dir() and not _owner_alive(path.name)
    ]
    for cgroup in stale:
        _kill_cgroup(cgroup)
        _remove_cgroup(cgroup)
    return stale


def _run_bounded(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; on timeout kill its whole process group (nsenter forks the real command)."""
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise CommandTimeout(
                f"timed out after {timeout:g}s: {' '.join(argv)}\n"
                f"stdout:\n{stdout}\nstderr:\n{stderr}",
                argv,
                None,
                stdout,
                stderr,
            ) from None
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


def _matches(entry: JournalEntry, unit: str | None, match: Mapping[str, str]) -> bool:
    """`journalctl -u UNIT FIELD=VALUE...` for one entry: the unit's own and systemd's about it."""
    if unit is not None and unit not in (
        entry.get("_SYSTEMD_UNIT"),
        entry.get("UNIT"),
        entry.get("OBJECT_SYSTEMD_UNIT"),
    ):
        return False
    return all(entry.get(field) == value for field, value in match.items())


def _decode_journal_value(value: object) -> JournalValue:
    # journalctl -o json writes values that are not valid UTF-8 or contain control characters
    # as arrays of byte values, and fields that occur more than once as arrays of values.
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return bytes(value).decode("utf-8", errors="replace")
        return [str(_decode_journal_value(item)) for item in value]
    return "" if value is None else str(value)


class Sandbox:
    """One booted sandbox. Build it with `boot()`, never directly."""

    def __init__(self, pid: int, cgroup: Path, launcher_pid: int) -> None:
        self.pid = pid
        """systemd's PID as the host sees it (1 inside)."""
        self.cgroup = cgroup
        """The host path of the sandbox's cgroup, the root of the inner systemd's hierarchy."""
        self.launcher_pid = launcher_pid
        """The host PID of `unshare`, whose child is `pid`."""

    def __repr__(self) -> str:
        return f"Sandbox(pid={self.pid}, cgroup={str(self.cgroup)!r})"

    @property
    def root(self) -> Path:
        """The sandbox's `/` seen from the host.

        Absolute symlinks inside resolve against the host's `/` when followed through this
        path; `write_file` and `read_file` work inside and have no such trap.
        """
        return Path(f"/proc/{self.pid}/root")

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside with all namespaces of the sandbox's PID 1 entered.

        The environment is `BASE_ENV` plus `env`. The process stays in the test runner's cgroup
        (see SANDBOX.md); to run something as part of a unit, use `systemd-run`.
        """
        refuse_checkout(argv, env)
        full_env = {**BASE_ENV, **(env or {})}
        command = ["nsenter", "-t", str(self.pid), "-a", *argv]
        completed = _run_bounded(command, timeout=timeout, input=input, env=full_env)
        if check and completed.returncode != 0:
            raise CommandError(
                f"exit status {completed.returncode} in sandbox: {' '.join(argv)}\n"
                f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}",
                argv,
                completed.returncode,
                completed.stdout,
                completed.stderr,
            )
        return completed

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write `text` to absolute `path` inside, creating parent directories."""
        if "/systemd/" in path:  # a unit or a drop-in: it may run as another user
            refuse_checkout(unit=text)
        self.run(
            "sh",
            "-c",
            'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1"',
            "sh",
            path,
            f"{mode:o}",
            input=text,
        )

    def read_file(self, path: str) -> str:
        return self.run("cat", "--", path).stdout

    def write_unit(self, name: str, text: str) -> None:
        """Put a unit file into /run/systemd/system inside; call `daemon_reload` afterwards."""
        self.write_file(f"/run/systemd/system/{name}", text)

    def daemon_reload(self) -> None:
        self.run("systemctl", "daemon-reload")

    def systemctl(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout).stdout

    def unit_properties(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show` of `unit` as a dict; all properties when none are named."""
        args = [arg for prop in props for arg in ("-p", prop)]
        output = self.systemctl("show", *args, "--", unit)
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def start(self, unit: str, timeout: float = 30) -> UnitResult:
        """`systemctl start unit` and the unit's state after it; a failed start does not raise."""
        return self._change("start", unit, timeout)

    def stop(self, unit: str, timeout: float = 30) -> UnitResult:
        return self._change("stop", unit, timeout)

    def _change(self, verb: str, unit: str, timeout: float) -> UnitResult:
        started = time.monotonic()
        completed = self.run("systemctl", verb, "--", unit, check=False, timeout=timeout)
        elapsed = time.monotonic() - started
        props = self.unit_properties(
            unit, "ActiveState", "SubState", "Result", "MainPID", "ExecMainStatus"
        )
        status = self.run(
            "systemctl", "status", "--no-pager", "--full", "--lines=20", "--", unit, check=False
        )
        return UnitResult(
            unit=unit,
            returncode=completed.returncode,
            active_state=props.get("ActiveState", ""),
            sub_state=props.get("SubState", ""),
            result=props.get("Result", ""),
            main_pid=int(props.get("MainPID") or 0),
            exec_main_status=int(props.get("ExecMainStatus") or 0),
            status=completed.stderr + status.stdout + status.stderr,
            elapsed=elapsed,
        )

    def system_state(self) -> str:
        """`systemctl is-system-running`: running, degraded, starting, ..."""
        return self.run("systemctl", "is-system-running", check=False).stdout.strip()

    def journal(
        self,
        unit: str | None = None,
        *,
        since_cursor: str | None = None,
        match: Mapping[str, str] | None = None,
    ) -> list[JournalEntry]:
        """Journal entries of this boot, oldest first, after journald has written what it has.

        Values are strings; a field that occurs more than once in an entry is a list of them.
        """
        self.run("journalctl", "--sync")
        argv = ["journalctl", "-o", "json", "--no-pager", "--quiet"]
        if since_cursor is not None:
            # systemd 252's journalctl, given both a match and --after-cursor whose entry does
            # not itself match, can skip the first matching entry after it. With a cursor,
            # the matches are therefore applied here instead.
            argv += ["--after-cursor", since_cursor]
        else:
            if unit is not None:
                argv += ["-u", unit]
            argv += [f"{field}={value}" for field, value in (match or {}).items()]
        output = self.run(*argv).stdout
        entries = [
            {key: _decode_journal_value(value) for key, value in json.loads(line).items()}
            for line in output.splitlines()
            if line.strip()
        ]
        if since_cursor is None:
            return entries
        return [e for e in entries if _matches(e, unit, match or {})]

    def journal_cursor(self) -> str:
        """A cursor for "entries after this point", for `journal(since_cursor=...)`."""
        self.run("journalctl", "--sync")
        output = self.run("journalctl", "-o", "json", "--no-pager", "--quiet", "-n", "1").stdout
        return str(json.loads(output.splitlines()[-1])["__CURSOR"])


def _systemd_pid(launcher: subprocess.Popen[bytes]) -> int | None:
    """The PID of `unshare`'s child once it has exec'd systemd."""
    try:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text()
    except OSError:
        return None
    for child in children.split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
    return None


def _tail(output: IO[bytes], limit: int = 4000) -> str:
    output.seek(0, os.SEEK_END)
    size = output.tell()
    output.seek(max(0, size - limit))
    return output.read().decode("utf-8", errors="replace")


def _boot_failure(sandbox: Sandbox | None, reason: str, output: IO[bytes]) -> BootError:
    """A BootError that says what failed, gathered before the sandbox is torn down."""
    parts = [reason]
    if sandbox is not None:
        for title, argv in (
            ("failed units", ("systemctl", "--no-pager", "--failed", "--full")),
            ("jobs", ("systemctl", "--no-pager", "list-jobs", "--full")),
            ("journal", ("journalctl", "--no-pager", "-n", "40", "-o", "short-monotonic")),
        ):
            try:
                text = sandbox.run(*argv, check=False, timeout=10).stdout
            except SandboxError as error:
                text = f"({error})"
            parts.append(f"--- {title}:\n{text.rstrip()}")
    parts.append(f"--- launcher output:\n{_tail(output).rstrip()}")
    return BootError("\n".join(parts))


def _await_boot(
    launcher: subprocess.Popen[bytes], cgroup: Path, output: IO[bytes], timeout: float
) -> Sandbox:
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        return max(0.1, deadline - time.monotonic())

    def check_launcher(sandbox: Sandbox | None) -> None:
        if launcher.poll() is not None:
            raise _boot_failure(sandbox, f"launcher exited with {launcher.returncode}", output)

    def systemd_started() -> int | None:
        check_launcher(None)
        return _systemd_pid(launcher)

    try:
        pid = wait_for(systemd_started, timeout=remaining(), what="unshare's child to be systemd")
    except WaitTimeout as error:
        raise _boot_failure(None, str(error), output) from None
    sandbox = Sandbox(pid, cgroup, launcher.pid)

    def private_socket() -> bool:
        check_launcher(sandbox)
        probe = ["nsenter", "-t", str(pid), "-m", "test", "-S", "/run/systemd/private"]
        return _run_bounded(probe, timeout=remaining()).returncode == 0

    try:
        wait_for(private_socket, timeout=remaining(), what="/run/systemd/private")
    except WaitTimeout as error:
        raise _boot_failure(sandbox, str(error), output) from None

    try:
        state = sandbox.run(
            "systemctl", "is-system-running", "--wait", check=False, timeout=remaining()
        ).stdout.strip()
    except CommandTimeout:
        state = "starting (timed out)"
    if state != "running":
        raise _boot_failure(sandbox, f"system state is {state!r}, not 'running'", output)
    return sandbox


def _launcher_gone(launcher: subprocess.Popen[bytes]) -> bool:
    # A zombie counts as gone: its namespaces, and with them the sandbox, no longer exist.
    return launcher.poll() is not None or _process_state(launcher.pid) in (None, "Z")


def _teardown(launcher: subprocess.Popen[bytes], cgroup: Path) -> None:
    pid = _systemd_pid(launcher)
    if pid is not None:
        try:
            Sandbox(pid, cgroup, launcher.pid).run("systemctl", "poweroff", "--no-block", timeout=5)
        except SandboxError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGRTMIN + 4)
        # unshare ignores SIGTERM; it exits once its child, systemd, has.
        with contextlib.suppress(WaitTimeout):
            wait_for(
                lambda: _launcher_gone(launcher),
                timeout=POWEROFF_TIMEOUT,
                what="the sandbox to power off",
            )
    if not _launcher_gone(launcher):
        # --kill-child=SIGKILL takes systemd, and with it the whole PID namespace, along.
        with contextlib.suppress(ProcessLookupError):
            os.kill(launcher.pid, signal.SIGKILL)
        _kill_cgroup(cgroup)
    launcher.wait(timeout=10)


@contextmanager
def boot(
    *,
    lowerdir: Path = Path("/"),
    docker: bool = False,
    services: bool = False,
    boot_timeout: float = 60,
) -> Iterator[Sandbox]:
    """Boot a sandbox over `lowerdir`, yield it, and tear it down whatever happens.

    With `docker`, docker.service, docker.socket and containerd.service are left unmasked;
    with `services` (a root of its own whose daemons are under test), PostgreSQL too.
    Raises BootError, with the failed units and the journal's tail, when the system does
    not reach `running` within `boot_timeout` seconds.
    """
    cgroup_root = cgroup2_root()
    if cgroup_root is None:
        raise SandboxError("no cgroup2 hierarchy is mounted")
    reap_stale(cgroup_root)
    cgroup = cgroup_root / f"{CGROUP_PREFIX}{_owner_tag()}-{secrets.token_hex(4)}"
    cgroup.mkdir()
    try:
        with tempfile.TemporaryFile() as output:
            # The launcher joins the sandbox cgroup before unsharing the cgroup namespace, so
            # that cgroup becomes the root of the inner systemd's hierarchy. It is already a
            # session leader, which is what `setsid` in SANDBOX.md provides; setsid(1) run by
            # a session leader would fork and hide unshare's PID from us.
            command = [
                "setpriv", "--bounding-set", "-sys_module",
                "unshare", "--pid", "--fork", "--kill-child=SIGKILL",
                "--mount", "--uts", "--ipc", "--net", "--cgroup",
                str(SANDBOX_INIT), str(lowerdir), *(["--docker"] if docker else []),
                *(["--services"] if services else []),
                "--bind", str(PROJECT),
            ]  # fmt: skip
            join_cgroup = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup / "cgroup.procs")]
            launcher = subprocess.Popen(
                [*join_cgroup, *command],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                yield _await_boot(launcher, cgroup, output, boot_timeout)
            finally:
                _teardown(launcher, cgroup)
    finally:
        _remove_cgroup(cgroup)

"""The sandbox itself: it boots clean, isolates, runs units, and leaves nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.system import sandbox as sandbox_module
from tests.system.sandbox import (
    CGROUP_PREFIX,
    BootError,
    JournalEntry,
    Sandbox,
    boot,
    cgroup2_root,
    reap_stale,
    wait_for,
)

PROJECT = Path(__file__).resolve().parents[2]
PORT = 47613


def listener_unit(port: int) -> str:
    return f"""\
[Unit]
Description=portguard sandbox test listener

[Service]
Type=simple
ExecStart=/usr/bin/python3 -c "import signal, socket; s = socket.socket(); \
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); \
s.listen(); signal.pause()"
"""


def listening(sandbox: Sandbox, port: int) -> str:
    """The `ss` line of the TCP listener on `port` inside, or ""."""
    output = sandbox.run("ss", "-Hltnp", f"sport = :{port}").stdout
    return output.strip()


def test_boots_into_its_own_namespaces(sandbox: Sandbox) -> None:
    assert sandbox.run("systemctl", "is-system-running").stdout.strip() == "running"
    assert sandbox.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    status = Path(f"/proc/{sandbox.pid}/status").read_text()
    assert [line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")] == ["1"]

    for namespace in ("pid", "mnt", "net", "uts", "ipc", "cgroup"):
        assert os.readlink(f"/proc/{sandbox.pid}/ns/{namespace}") != os.readlink(
            f"/proc/self/ns/{namespace}"
        ), namespace

    links = sandbox.run("ip", "-o", "link", "show").stdout.splitlines()
    assert len(links) == 1, links
    assert links[0].split(":")[1].strip() == "lo"
    assert ",UP," in links[0] or ",UP>" in links[0]
    host_interfaces = {name for _, name in socket.if_nameindex()} - {"lo"}
    assert host_interfaces.isdisjoint(sandbox.run("ls", "/sys/class/net").stdout.split())

    assert sandbox.run("hostname").stdout.strip() == "portguard-sandbox"
    sandbox.run("hostname", "portguard-renamed")
    assert sandbox.run("hostname").stdout.strip() == "portguard-renamed"
    assert socket.gethostname() != "portguard-renamed"

    # Units inside run the project from its checkout.
    assert sandbox.run("test", "-f", str(PROJECT / "pyproject.toml"), check=False).returncode == 0


def test_units_start_stop_fail_and_log(sandbox: Sandbox) -> None:
    sandbox.write_unit("probe-listener.service", listener_unit(PORT))
    sandbox.write_unit(
        "probe-fails.service",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo probe-says-goodbye; exit 3'\n",
    )
    sandbox.daemon_reload()

    started = sandbox.start("probe-listener.service")
    assert started.returncode == 0, started.status
    assert (started.active_state, started.sub_state) == ("active", "running"), started.status
    assert started.main_pid > 0
    line = wait_for(lambda: listening(sandbox, PORT), timeout=10, what=f"port {PORT}")
    assert f"127.0.0.1:{PORT}" in line
    assert f"pid={started.main_pid}," in line

    stopped = sandbox.stop("probe-listener.service")
    assert stopped.returncode == 0
    assert stopped.active_state == "inactive"
    assert listening(sandbox, PORT) == ""

    cursor = sandbox.journal_cursor()
    failed = sandbox.start("probe-fails.service")
    assert failed.returncode != 0
    assert failed.active_state == "failed"
    assert failed.result == "exit-code"
    assert failed.exec_main_status == 3
    assert "probe-fails.service" in failed.status

    def goodbye() -> list[JournalEntry]:
        entries = sandbox.journal("probe-fails.service", since_cursor=cursor)
        return [entry for entry in entries if entry.get("MESSAGE") == "probe-says-goodbye"]

    [entry] = wait_for(goodbye, timeout=10, what="the unit's output in the journal")
    assert entry["_SYSTEMD_UNIT"] == "probe-fails.service"
    # Nothing from before the cursor comes back.
    assert all(
        entry.get("MESSAGE") != "Starting probe-listener.service..."
        for entry in sandbox.journal(since_cursor=cursor)
    )
    matched = sandbox.journal(match={"_SYSTEMD_UNIT": "probe-fails.service"})
    assert [entry["MESSAGE"] for entry in matched] == ["probe-says-goodbye"]


def test_files_written_inside_stay_inside(sandbox: Sandbox) -> None:
    probe = "/etc/portguard-sandbox-probe"
    sandbox.write_file(probe, "inside\n", mode=0o600)
    assert sandbox.read_file(probe) == "inside\n"
    assert (sandbox.root / probe.lstrip("/")).read_text() == "inside\n"
    assert sandbox.run("stat", "-c", "%a", probe).stdout.strip() == "600"
    assert not Path(probe).exists()


@dataclass(frozen=True)
class Traces:
    """What a sandbox leaves on the host while it runs."""

    launcher_pid: int
    systemd_pid: int
    cgroup: Path


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def processes_in_cgroups(prefix: str) -> list[str]:
    """`pid: cgroup` of every host process in a cgroup whose name starts with `prefix`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            lines = (proc / "cgroup").read_text().splitlines()
        except OSError:
            continue
        found += [f"{proc.name}: {line}" for line in lines if f"/{prefix}" in line]
    return found


def assert_none_of_ours_left(mounts_before: str) -> None:
    # Other test runs may have sandboxes of their own; this process must have none left.
    ours = f"{CGROUP_PREFIX}{os.getpid()}-"
    root = cgroup2_root()
    assert root is not None
    assert list(root.glob(f"{ours}*")) == []
    assert processes_in_cgroups(ours) == []
    assert Path("/proc/self/mountinfo").read_text() == mounts_before


def assert_nothing_left(traces: Traces, mounts_before: str) -> None:
    assert not process_exists(traces.launcher_pid)
    assert not process_exists(traces.systemd_pid)
    assert not traces.cgroup.exists()
    assert processes_in_cgroups(traces.cgroup.name) == []
    assert_none_of_ours_left(mounts_before)


def test_teardown_leaves_nothing() -> None:
    mounts_before = Path("/proc/self/mountinfo").read_text()
    with boot() as sandbox:
        traces = Traces(sandbox.launcher_pid, sandbox.pid, sandbox.cgroup)
        sandbox.write_unit("probe-listener.service", listener_unit(PORT))
        sandbox.daemon_reload()
        assert sandbox.start("probe-listener.service").active
        assert processes_in_cgroups(sandbox.cgroup.name) != []
    assert_nothing_left(traces, mounts_before)


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_teardown_on_exception(exception: type[BaseException]) -> None:
    mounts_before = Path("/proc/self/mountinfo").read_text()
    with pytest.raises(exception, match="test body failed"), boot() as sandbox:
        traces = Traces(sandbox.launcher_pid, sandbox.pid, sandbox.cgroup)
        raise exception("test body failed")
    assert_nothing_left(traces, mounts_before)


def test_boot_failure_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    mounts_before = Path("/proc/self/mountinfo").read_text()
    # An empty lower layer has no /proc to mount on, so sandbox-init fails before systemd.
    with pytest.raises(BootError, match="launcher exited") as failure, boot(lowerdir=tmp_path):
        pytest.fail("boot() yielded a sandbox over an empty root")
    assert "proc" in str(failure.value)
    assert_none_of_ours_left(mounts_before)


def test_degraded_boot_names_the_failed_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy of sandbox-init that also enables a unit failing at boot.
    failing_unit = (
        'mkdir -p "$root/run/systemd/system/multi-user.target.wants"\n'
        "printf '[Service]\\nType=oneshot\\nExecStart=/bin/false\\n'"
        ' > "$root/run/systemd/system/probe-boot-fails.service"\n'
        'ln -s ../probe-boot-fails.service "$root/run/systemd/system/multi-user.target.wants/"\n'
    )
    marker = '\ncd "$root"\n'
    original = sandbox_module.SANDBOX_INIT.read_text()
    assert marker in original
    init = tmp_path / "sandbox-init"
    init.write_text(original.replace(marker, "\n" + failing_unit + marker))
    init.chmod(0o755)
    monkeypatch.setattr(sandbox_module, "SANDBOX_INIT", init)
    mounts_before = Path("/proc/self/mountinfo").read_text()

    with pytest.raises(BootError, match="'degraded'") as failure, boot():
        pytest.fail("boot() yielded a degraded sandbox")
    assert "probe-boot-fails.service" in str(failure.value)
    assert "--- journal:" in str(failure.value)
    assert_none_of_ours_left(mounts_before)


def test_sandboxes_do_not_interfere() -> None:
    with boot() as first, boot() as second:
        assert first.cgroup != second.cgroup
        for sandbox, extra in ((first, "only-first"), (second, "only-second")):
            sandbox.write_unit("probe-listener.service", listener_unit(PORT))
            sandbox.write_unit(
                f"{extra}.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=true\n"
            )
            sandbox.daemon_reload()
            assert sandbox.start(f"{extra}.service").active
            started = sandbox.start("probe-listener.service")
            assert started.active, started.status
            wait_for(partial(listening, sandbox, PORT), timeout=10, what=f"port {PORT}")

        assert first.stop("probe-listener.service").active_state == "inactive"
        assert second.unit_properties("probe-listener.service", "ActiveState") == {
            "ActiveState": "active"
        }
        assert listening(second, PORT) != ""
        assert listening(first, PORT) == ""

        first_units = first.systemctl("list-units", "--all", "--plain", "--no-legend")
        second_units = second.systemctl("list-units", "--all", "--plain", "--no-legend")
        assert "only-first.service" in first_units
        assert "only-second.service" not in first_units
        assert "only-second.service" in second_units
        assert "only-first.service" not in second_units


def test_reap_stale_removes_orphans_only(sandbox: Sandbox) -> None:
    root = cgroup2_root()
    assert root is not None
    # No process has this PID (it is above any pid_max), so the owner is certainly gone.
    stale = root / f"{CGROUP_PREFIX}4294967295-0-deadbeef"
    (stale / "leftover.scope").mkdir(parents=True)
    orphan = subprocess.Popen(
        ["sh", "-c", 'echo $$ > "$0" && exec sleep 60', str(stale / "leftover.scope/cgroup.procs")]
    )
    try:
        wait_for(
            lambda: (stale / "leftover.scope/cgroup.procs").read_text().strip(),
            timeout=5,
            what="the orphan to join its cgroup",
        )
        assert stale in reap_stale()
        assert orphan.wait(timeout=5) == -9
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert not stale.exists()
    # The live sandbox of this very process is not stale.
    assert sandbox.cgroup.exists()
    assert sandbox.system_state() == "running"

"""`portguard reserve --apply` and portguard-reserve.service against the real kernel, in the
sandbox's own network namespace (net.ipv4.ip_local_reserved_ports is per namespace, so the
machine's own value must not move)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.guarded import PYTHON, as_user, install_portguard, portguard, write_registry
from tests.system.sandbox import Sandbox

SYSCTL = "/proc/sys/net/ipv4/ip_local_reserved_ports"
UNIT = "portguard-reserve.service"
UNIT_FILE = Path(__file__).resolve().parents[2] / "systemd" / UNIT
OTHERS = "40000,40010-40012"  # someone else's entries, as sysctl.d would leave them
REGISTRY = """\
    version: 1
    units:
      api.service:
        listen: [8080/tcp, "127.0.0.1:8081/tcp", 40011/tcp]
      dns.service:
        listen: ["9000-9010/udp", 9005/tcp]
      redis@.service:
        listen: ["%i/tcp"]
"""
MERGED = "8080-8081,9000-9010,40000,40010-40012"


@pytest.fixture(autouse=True)
def _machine_value_unchanged() -> Iterator[None]:
    """Whatever the sandbox does, the machine's own list stays as it was."""
    before = Path(SYSCTL).read_text()
    yield
    assert Path(SYSCTL).read_text() == before


def reserved(sandbox: Sandbox) -> str:
    return sandbox.read_file(SYSCTL).strip()


def set_reserved(sandbox: Sandbox, value: str) -> None:
    sandbox.run("sh", "-c", f'echo "$1" > {SYSCTL}', "sh", value)
    assert reserved(sandbox) == value


def test_apply_sets_exactly_the_merged_list(sandbox: Sandbox) -> None:
    set_reserved(sandbox, OTHERS)
    write_registry(sandbox, REGISTRY)

    shown = portguard(sandbox, "reserve")
    assert (shown.returncode, shown.stdout) == (0, f"{MERGED}\n")
    assert reserved(sandbox) == OTHERS  # without --apply nothing changes

    applied = portguard(sandbox, "reserve", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == f"{MERGED}\n"
    assert reserved(sandbox) == MERGED
    assert "added 8080-8081,9000-9010 to net.ipv4.ip_local_reserved_ports" in applied.stderr
    assert "left out %i/tcp of redis@.service" in applied.stderr

    again = portguard(sandbox, "reserve", "--apply")
    assert (again.returncode, again.stdout) == (0, f"{MERGED}\n")
    assert "nothing written" in again.stderr
    assert reserved(sandbox) == MERGED


def test_a_list_longer_than_one_write_is_kept_whole(sandbox: Sandbox) -> None:
    """The kernel takes a page per write() and prints the list in one read() only."""
    ports = range(20000, 26000, 2)  # 3,000 separate ports: about 18 KB of list
    units = "".join(f"  u{p}.service:\n    listen: [{p}/tcp]\n" for p in ports)
    write_registry(sandbox, "version: 1\nunits:\n" + units)
    set_reserved(sandbox, OTHERS)

    applied = portguard(sandbox, "reserve", "--apply", timeout=120)
    assert applied.returncode == 0, applied.stderr
    expected = ",".join(str(p) for p in ports) + "," + OTHERS
    assert reserved(sandbox) == expected
    assert applied.stdout == expected + "\n"


def test_unprivileged_apply_is_refused_with_77(sandbox: Sandbox) -> None:
    set_reserved(sandbox, OTHERS)
    write_registry(sandbox, REGISTRY)
    refused = as_user(sandbox, 65534, PYTHON, "-m", "portguard", "reserve", "--apply")
    assert refused.returncode == 77
    assert refused.stdout == ""
    assert refused.stderr == f"portguard: cannot write {SYSCTL}: Permission denied (run as root)\n"
    assert reserved(sandbox) == OTHERS


def install_service(sandbox: Sandbox, *, dropin: str | None = None) -> None:
    install_portguard(sandbox)
    sandbox.write_file(f"/etc/systemd/system/{UNIT}", UNIT_FILE.read_text())
    if dropin is not None:
        sandbox.write_file(f"/etc/systemd/system/{UNIT}.d/test.conf", dropin)
    sandbox.daemon_reload()


def test_service_applies_the_merged_list(sandbox: Sandbox) -> None:
    write_registry(sandbox, REGISTRY)
    set_reserved(sandbox, "")  # as after a boot with nothing in sysctl.d
    install_service(sandbox)
    sandbox.systemctl("enable", UNIT)
    wants = sandbox.run("systemctl", "show", "-p", "Wants", "--value", "sysinit.target").stdout
    assert UNIT in wants.split()

    started = sandbox.start(UNIT)
    assert (started.active_state, started.sub_state) == ("active", "exited"), started.status
    assert reserved(sandbox) == "8080-8081,9000-9010,40011"

    # What sysctl.d set before it is merged in, not overwritten.
    sandbox.stop(UNIT)
    set_reserved(sandbox, OTHERS)
    assert sandbox.start(UNIT).active
    assert reserved(sandbox) == MERGED
    logged = sandbox.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout
    assert "portguard: added 8080-8081,9000-9010 to net.ipv4.ip_local_reserved_ports" in logged


def test_service_is_skipped_without_a_registry(sandbox: Sandbox) -> None:
    # As the package leaves a host: /etc/portguard/registry.d exists, empty.
    sandbox.run("mkdir", "-p", "/etc/portguard/registry.d")
    install_service(sandbox)
    set_reserved(sandbox, OTHERS)
    started = sandbox.start(UNIT)
    assert started.active_state == "inactive"
    props = sandbox.unit_properties(UNIT, "ConditionResult")
    assert props["ConditionResult"] == "no"
    assert reserved(sandbox) == OTHERS


def test_service_is_ordered_early_and_verifies(sandbox: Sandbox) -> None:
    install_service(sandbox)
    props = sandbox.unit_properties(UNIT, "After", "Before", "Wants", "DefaultDependencies")
    assert props["DefaultDependencies"] == "no"
    assert {"systemd-sysctl.service", "local-fs.target"} <= set(props["After"].split())
    assert {"sysinit.target", "network-pre.target"} <= set(props["Before"].split())
    assert "network-pre.target" in props["Wants"].split()
    verified = sandbox.run(
        "systemd-analyze", "verify", "--man=no", f"/etc/systemd/system/{UNIT}", check=False
    )
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


def test_service_may_write_that_one_sysctl_only(sandbox: Sandbox) -> None:
    """The hardening leaves /proc/sys read-only but for ip_local_reserved_ports."""
    write_registry(sandbox, REGISTRY)
    other = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
    before = sandbox.read_file(other).strip()
    install_service(
        sandbox,
        dropin=f"[Service]\nExecStart=\nExecStart=/bin/sh -c 'echo 1000 > {other}'\n",
    )
    started = sandbox.start(UNIT)
    assert started.result == "exit-code", started.status
    assert (
        "Read-only file system"
        in sandbox.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout
    )
    assert sandbox.read_file(other).strip() == before


def test_service_exposure_stays_low(sandbox: Sandbox) -> None:
    install_service(sandbox)
    report = sandbox.run("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    found = re.search(rf"Overall exposure level for {re.escape(UNIT)}: (\d+\.\d+)", report)
    assert found, report
    assert float(found.group(1)) <= 1.5, report

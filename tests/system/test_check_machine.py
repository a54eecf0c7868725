"""A systemd-nspawn machine on the host's network holds a registered port (issue 14).

A real nspawn, from Debian's systemd-container (tools/setup installs it), started as
SANDBOX.md says (`systemd-run --unit=X systemd-nspawn -D DIR -M NAME …`): systemd-machined
registers the machine and its payload runs in /machine.slice/machine-NAME.scope/payload. Its
root is the cached minimal bookworm root. The guard must name the machine, not a transient
scope to stop and disable, and give machinectl's fix.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.system.debroot import root_tarball, unavailable
from tests.system.guarded import (
    guard_start,
    listener,
    portguard,
    wait_listening,
)
from tests.system.sandbox import Sandbox, wait_for
from tests.system.test_check import guard_status, registry_for

PORT = 18090
MACHINE = "bbm"
PAYLOAD = (
    "import socket, time; s = socket.socket(); "
    f"s.bind(('0.0.0.0', {PORT})); s.listen(); time.sleep(10**6)"
)


def start_machine(sandbox: Sandbox) -> None:
    if shutil.which("systemd-nspawn") is None:
        unavailable("systemd-nspawn is not installed: run tools/setup (systemd-container)")
    root = sandbox.root / "var/lib/machines" / MACHINE
    root.mkdir(parents=True)
    subprocess.run(["tar", "--zstd", "-xf", str(root_tarball("bookworm")), "-C", str(root)],
                   check=True, timeout=120)  # fmt: skip
    sandbox.run("systemd-run", f"--unit={MACHINE}-nspawn", "systemd-nspawn", "-q", "-D",
                f"/var/lib/machines/{MACHINE}", "-M", MACHINE, "/usr/bin/python3", "-c",
                PAYLOAD)  # fmt: skip
    wait_listening(sandbox, PORT)
    wait_for(lambda: MACHINE in sandbox.run("machinectl", "list", "--no-legend").stdout or None,
             timeout=20, what="machined to list the machine")  # fmt: skip


def test_a_machine_on_the_host_network_is_named_with_machinectls_fix(sandbox: Sandbox) -> None:
    start_machine(sandbox)
    guarded = guard_start(sandbox, registry_for("myapp.service", f"{PORT}/tcp"),
                          exec_start=listener("0.0.0.0", PORT))  # fmt: skip
    assert guard_status(sandbox, "myapp.service") == 69, guarded.result.status
    fields = guarded.entry
    assert fields["PORTGUARD_OWNER_KIND"] == "machine", fields
    assert fields["PORTGUARD_OWNER_UNIT"] == f"machine-{MACHINE}.scope", fields
    assert fields["PORTGUARD_OWNER_COMM"] == "python3", fields
    remedy = str(fields["PORTGUARD_REMEDY"])
    assert remedy.startswith(f"'machinectl stop {MACHINE}'"), remedy
    assert "systemctl disable" not in remedy and "systemctl stop machine-" not in remedy, remedy
    assert f"machine {MACHINE} (machine-{MACHINE}.scope, systemd-nspawn)" in str(fields["MESSAGE"])

    why = portguard(sandbox, "why", f"{PORT}/tcp")
    assert why.returncode == 1, why.stderr
    assert f"machine    {MACHINE} (systemd-nspawn; machine-{MACHINE}.scope)" in why.stdout, (
        why.stdout
    )
    assert f"'machinectl stop {MACHINE}'" in why.stdout.replace("\n           ", " "), why.stdout

"""An LXC system container on the host's network holds a registered port (issue 25: a kind of
owner added as one row of policy/kinds.py and one detector of policy/attribute.py).

Debian's own LXC (tools/setup installs `lxc`) starts a privileged container inside the
sandbox with `lxc-start`, sharing the sandbox's network (`lxc.net.0.type = none`, the way a
system container is run on the host's network), its root the sandbox's own. LXC puts the
container's processes in the cgroup `/lxc.payload.NAME`, outside systemd's slices. The
guard must name the container and give LXC's fix, never a unit to stop; after that fix the
service starts.
"""

from __future__ import annotations

import shutil

from tests.system.debroot import unavailable
from tests.system.guarded import guard_start, listener, portguard, start_guarded, wait_listening
from tests.system.sandbox import Sandbox, wait_for
from tests.system.test_check import guard_status, registry_for

PORT = 18091
NAME = "lxweb"
PAYLOAD = "/usr/local/bin/portguard-lxc-payload"
CONFIG = f"""\
lxc.uts.name = {NAME}
lxc.net.0.type = none
lxc.rootfs.path = dir:/
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:rw sys:ro
lxc.init.cmd = /usr/bin/python3 {PAYLOAD}
"""


def start_container(sandbox: Sandbox) -> None:
    if shutil.which("lxc-start") is None:
        unavailable("LXC is not installed: run tools/setup (lxc)")
    sandbox.write_file(PAYLOAD, "import socket, time\ns = socket.socket()\n"
                       f"s.bind(('0.0.0.0', {PORT}))\ns.listen()\ntime.sleep(10**6)\n")  # fmt: skip
    sandbox.write_file(f"/var/lib/lxc/{NAME}/config", CONFIG)
    sandbox.run("lxc-start", "-n", NAME, timeout=60)
    wait_listening(sandbox, PORT)
    shown = sandbox.run("ss", "-Htlne", f"sport = :{PORT}").stdout
    assert f"cgroup:/lxc.payload.{NAME}" in shown, shown  # LXC's naming, as the detector reads it


def test_an_lxc_container_is_named_with_lxcs_fix_and_the_fix_works(sandbox: Sandbox) -> None:
    start_container(sandbox)
    guarded = guard_start(sandbox, registry_for("myapp.service", f"{PORT}/tcp"),
                          exec_start=listener("0.0.0.0", PORT))  # fmt: skip
    assert guard_status(sandbox, "myapp.service") == 69, guarded.result.status
    fields = guarded.entry
    assert fields["PORTGUARD_OWNER_KIND"] == "container", fields
    assert fields["PORTGUARD_OWNER_CONTAINER"] == NAME, fields
    assert fields["PORTGUARD_OWNER_COMM"] == "python3", fields
    assert "PORTGUARD_OWNER_UNIT" not in fields, fields  # outside systemd's units
    remedy = str(fields["PORTGUARD_REMEDY"])
    assert remedy.startswith(f"'lxc-stop -n {NAME}'"), remedy
    assert "systemctl stop" not in remedy, remedy
    assert f"lxc container {NAME} via the container engine" in str(fields["MESSAGE"])

    why = portguard(sandbox, "why", f"{PORT}/tcp")
    assert why.returncode == 1, why.stderr
    text = why.stdout.replace("\n           ", " ")
    assert f"container  lxc {NAME}, its own process on the host's network" in text, text
    assert f"'lxc-stop -n {NAME}'" in text, text

    # The fix, as the journal gave it: the port frees, and the guarded service starts.
    sandbox.run("lxc-stop", "-n", NAME, "--kill", timeout=60)
    wait_for(lambda: not sandbox.run("ss", "-Htln", f"sport = :{PORT}").stdout.strip() or None,
             timeout=20, what="the container's port to free")  # fmt: skip
    sandbox.run("systemctl", "reset-failed", "myapp.service")
    started = start_guarded(sandbox, "myapp.service")
    assert started.result.active, started.result.status

"""A socket its own cgroup does not hold: created by one process, held by another elsewhere,
and the creator's cgroup gone -- as with Podman's conmon, whose published port carries the
cgroup of the `podman` command that made it (SANDBOX.md). The cgroup evidence fails, so the
guard finds the holder by the socket's inode, as root and bounded in time (issue 14).
"""

from __future__ import annotations

import shlex

from tests.system.guarded import (
    PYTHON,
    guard_start,
    listener,
    plain_unit,
    wait_listening,
)
from tests.system.sandbox import Sandbox, wait_for
from tests.system.test_check import guard_status, registry_for

PORT = 18095
# Makes the listener, hands it to a child that moves itself into holder.service's cgroup,
# and exits: the socket's cgroup (the transient scope) then empties and is removed.
MAKER = f"""
import os, socket, time
s = socket.socket(); s.bind(("0.0.0.0", {PORT})); s.listen()
if os.fork() == 0:
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # let the caller's pipes close
        os.dup2(null, fd)
    with open("/sys/fs/cgroup/system.slice/holder.service/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(10**6)
"""


def test_a_socket_held_outside_its_cgroup_is_found_by_its_inode(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "holder.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    sandbox.daemon_reload()
    assert sandbox.start("holder.service").active
    sandbox.run("systemd-run", "--scope", "--unit=maker", "--", PYTHON, "-c", MAKER, timeout=30)
    wait_listening(sandbox, PORT)
    wait_for(lambda: "maker.scope" not in sandbox.run("systemctl", "list-units", "--all",
                                                       "--no-legend").stdout or None,
             timeout=20, what="the maker's scope to go")  # fmt: skip
    children = sandbox.run("cat", "/sys/fs/cgroup/system.slice/holder.service/cgroup.procs")
    main_pid = sandbox.unit_properties("holder.service", "MainPID")["MainPID"]
    (holder,) = [p for p in children.stdout.split() if p != main_pid]

    guarded = guard_start(sandbox, registry_for("myapp.service", f"{PORT}/tcp"),
                          exec_start=listener("0.0.0.0", PORT))  # fmt: skip
    assert guard_status(sandbox, "myapp.service") == 69, guarded.result.status
    fields = guarded.entry
    assert fields["PORTGUARD_OWNER_UNIT"] == "holder.service", fields
    assert fields["PORTGUARD_OWNER_PID"] == holder, fields
    assert fields["PORTGUARD_OWNER_KIND"] == "service", fields
    assert "not visible" not in str(fields.get("PORTGUARD_UNKNOWN", "")), fields
    assert shlex.quote("holder.service") in str(fields["PORTGUARD_REMEDY"]), fields

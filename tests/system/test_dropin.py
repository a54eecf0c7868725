"""`portguard dropin` against a real systemd: the drop-in it writes guards the unit, and
removing it unguards the unit; systemd is reloaded over D-Bus; bad names change nothing.

The guarded service is `sleep infinity` with a claim on a port a squatter holds, so "guarded
-> fails, unguarded -> starts" is visible without the service itself binding anything.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from tests.system.guarded import (
    dropin,
    install_portguard,
    listener,
    plain_unit,
    start_guarded,
    write_registry,
)
from tests.system.sandbox import Sandbox
from tests.system.test_check import guard_status, registry_for, squat

CONF = "/etc/systemd/system/myapp.service.d/50-portguard.conf"
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


def lines(completed: subprocess.CompletedProcess[str]) -> tuple[int, list[str], list[str]]:
    return completed.returncode, completed.stdout.splitlines(), completed.stderr.splitlines()


def identity(sandbox: Sandbox, path: str) -> str:
    """Inode and modification time of PATH inside: what a rewrite would change."""
    return sandbox.run("stat", "-c", "%i %Y.%y", path).stdout


def exec_start_pre(sandbox: Sandbox, unit: str) -> str:
    """The unit's ExecStartPre= as systemd loaded it; "" when it has none (`show` omits it)."""
    return sandbox.unit_properties(unit, "ExecStartPre").get("ExecStartPre", "")


def set_up_conflict(sandbox: Sandbox) -> int:
    """myapp.service (unguarded, binds nothing) claims 8080, which a squatter holds."""
    install_portguard(sandbox)
    holder = squat(sandbox, "squatter.service", listener("0.0.0.0", 8080), 8080)
    write_registry(sandbox, registry_for("myapp.service", "8080/tcp"))
    plain_unit(sandbox, "myapp.service", SLEEPER)
    sandbox.daemon_reload()
    return holder


def test_round_trip_guards_then_unguards_the_unit(sandbox: Sandbox) -> None:
    holder = set_up_conflict(sandbox)

    assert lines(dropin(sandbox, "--reload", "myapp.service")) == (
        0,
        [f"written {CONF}", "reloaded systemd"],
        [],
    )

    cat = sandbox.systemctl("cat", "myapp.service")
    assert f"# {CONF}\n# portguard guard drop-in for myapp.service\n" in cat
    assert "[Service]\nExecStartPre=+/usr/bin/portguard check\n" in cat
    assert sandbox.unit_properties("myapp.service", "DropInPaths")["DropInPaths"] == CONF
    assert sandbox.read_file(CONF).startswith("# portguard guard drop-in for myapp.service\n")
    assert sandbox.run("stat", "-c", "%a %U", CONF, f"{CONF.rsplit('/', 1)[0]}").stdout == (
        "644 root\n755 root\n"
    )

    guarded = start_guarded(sandbox, "myapp.service")
    assert guarded.result.active_state == "failed"
    assert guard_status(sandbox, "myapp.service") == 69
    assert guarded.entry["PORTGUARD_VERDICT"] == "held"
    assert guarded.entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"
    assert guarded.entry["PORTGUARD_OWNER_PID"] == str(holder)
    assert guarded.entry["_SYSTEMD_UNIT"] == "myapp.service"

    before = identity(sandbox, CONF)
    assert lines(dropin(sandbox, "--reload", "myapp.service")) == (
        0,
        [f"unchanged {CONF}", "reloaded systemd"],
        [],
    )
    assert identity(sandbox, CONF) == before

    assert lines(dropin(sandbox, "--remove", "--reload", "myapp.service")) == (
        0,
        [f"removed {CONF}", "reloaded systemd"],
        [],
    )
    assert "portguard" not in sandbox.systemctl("cat", "myapp.service")
    assert sandbox.unit_properties("myapp.service", "DropInPaths")["DropInPaths"] == ""
    assert sandbox.run("test", "-e", CONF.rsplit("/", 1)[0], check=False).returncode == 1

    unguarded = start_guarded(sandbox, "myapp.service")
    assert unguarded.result.active, unguarded.result.status
    assert unguarded.entries == []
    assert exec_start_pre(sandbox, "myapp.service") == ""

    assert lines(dropin(sandbox, "--remove", "myapp.service")) == (
        0,
        [f"absent {CONF}"],
        [],
    )


def test_without_reload_systemd_keeps_the_unit_as_loaded(sandbox: Sandbox) -> None:
    set_up_conflict(sandbox)
    # A running unit stays loaded (an inactive one is unloaded and read afresh on demand).
    assert sandbox.start("myapp.service").active

    code, out, err = lines(dropin(sandbox, "myapp.service"))

    assert (code, out) == (0, [f"written {CONF}"])
    assert err == [
        "portguard: systemd sees the change after 'systemctl daemon-reload' (or --reload)"
    ]
    # Loaded units keep what they were loaded with until the reload.
    assert exec_start_pre(sandbox, "myapp.service") == ""

    assert lines(dropin(sandbox, "--reload", "myapp.service"))[1] == [
        f"unchanged {CONF}",
        "reloaded systemd",
    ]
    assert "path=/usr/bin/portguard ;" in exec_start_pre(sandbox, "myapp.service")


def test_a_templates_drop_in_guards_its_instances(sandbox: Sandbox) -> None:
    install_portguard(sandbox)
    squat(sandbox, "squatter.service", listener("0.0.0.0", 6380), 6380)
    write_registry(sandbox, registry_for("redis@.service", '"%i/tcp"'))
    plain_unit(sandbox, "redis@.service", SLEEPER)

    code, out, _ = lines(dropin(sandbox, "--reload", "redis@.service"))

    assert (code, out[0]) == (0, "written /etc/systemd/system/redis@.service.d/50-portguard.conf")
    assert "ExecStartPre=+/usr/bin/portguard check" in sandbox.systemctl(
        "cat", "redis@6380.service"
    )
    assert start_guarded(sandbox, "redis@6379.service").result.active
    held = start_guarded(sandbox, "redis@6380.service")
    assert held.result.active_state == "failed"
    assert held.entry["PORTGUARD_UNIT"] == "redis@6380.service"
    assert held.entry["PORTGUARD_OWNER_UNIT"] == "squatter.service"


# Names at the edges of systemd's rules that portguard accepts: systemd must use the drop-in.
EDGE_NAMES = ["a\\x2db.service", "a:b_c.service", "x@y@z.service", "..service", "w.socket"]


def test_names_portguard_accepts_are_names_systemd_reads_drop_ins_for(sandbox: Sandbox) -> None:
    for name in EDGE_NAMES:
        section = "[Socket]\nListenStream=7000\n" if name.endswith(".socket") else SLEEPER
        plain_unit(sandbox, name, section)

    code, out, err = lines(dropin(sandbox, "--reload", *EDGE_NAMES))

    assert (code, err) == (0, [])
    for name, line in zip(EDGE_NAMES, out, strict=False):
        path = f"/etc/systemd/system/{name}.d/50-portguard.conf"
        assert line == f"written {path}"
        props = sandbox.unit_properties(name, "LoadState", "DropInPaths", "ExecStartPre")
        assert props["LoadState"] == "loaded", name
        assert shlex.split(props["DropInPaths"]) == [path], name  # `show` quotes a backslash
        assert (
            "path=/usr/bin/portguard ; argv[]=/usr/bin/portguard check" in props["ExecStartPre"]
        ), name


INJECTIONS = [
    "myapp.service\nExecStartPre=/bin/touch /tmp/pwned",
    "myapp%n.service",
    "../../../etc/pwned.service",
    "myapp.service/../../x.service",
    "my app.service",
    "myapp].service",
    "a=b.service",
    "myapp.service\n[Unit]",
]


# What the injections would create if a name reached a path or a directive.
PWNED = ["/etc/pwned.service", "/etc/pwned.service.d", "/tmp/pwned", "/x.service.d"]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_a_bad_name_among_good_ones_changes_nothing(sandbox: Sandbox, bad: str) -> None:
    plain_unit(sandbox, "myapp.service", SLEEPER)
    sandbox.daemon_reload()
    before = sandbox.run("find", "/etc/systemd", *PWNED, check=False).stdout

    code, out, err = lines(dropin(sandbox, "--reload", "myapp.service", bad))

    assert (code, out) == (64, [])
    assert len(err) == 1
    assert err[0].startswith(f"portguard: {bad!r} is not a unit that can be guarded")
    after = sandbox.run("find", "/etc/systemd", *PWNED, check=False).stdout
    assert after == before
    assert exec_start_pre(sandbox, "myapp.service") == ""


def test_a_failed_reload_is_one_line_and_exit_69(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "myapp.service", SLEEPER)
    sandbox.daemon_reload()
    assert sandbox.start("myapp.service").active  # stays loaded: a reload would show

    # An explicit bus address wins over systemd's private socket; this one leads nowhere.
    completed = dropin(sandbox, "--reload", "myapp.service",
                       env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/no-such-bus"})  # fmt: skip

    code, out, err = lines(completed)
    assert (code, out) == (69, [f"written {CONF}"])
    assert len(err) == 1
    assert err[0].startswith("portguard: systemd was not reloaded: D-Bus: ")
    # The file is in place; systemd has simply not read it yet.
    assert sandbox.read_file(CONF).startswith("# portguard guard drop-in")
    assert exec_start_pre(sandbox, "myapp.service") == ""


def test_unprivileged_user_cannot_write_and_gets_one_line(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "myapp.service", SLEEPER)
    completed = dropin(sandbox, "myapp.service", user=65534)

    assert lines(completed) == (
        73,
        [],
        [
            "portguard: /etc/systemd/system/myapp.service.d: cannot create the directory: "
            "Permission denied"
        ],
    )

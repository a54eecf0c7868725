"""Real Podman holds a registered port: rootful, rootless and under Quadlet (issue 14).

Each Debian release's own Podman, from the cached SUITE-podman roots (tools/roots): podman 4.3
on Debian 12 (CNI; rootless through slirp4netns and rootlessport; no Quadlet) and podman 5.4
on Debian 13 (netavark; rootless through pasta by default, slirp4netns on request; Quadlet).
SANDBOX.md's workarounds for a sandbox's cgroup and devices are applied (pids_limit = 0, vfs
storage, /dev/net/tun). The image is busybox-static imported offline, as for Docker.

What holds the port, and where the guard must find the container's name:
- rootful: conmon, whose command line carries `-c ID -n NAME`; the socket's own cgroup is where
  the `podman` command ran (a login session, which may be gone), so the holder is found in
  conmon's cgroup or by the socket's inode;
- rootless: a forwarder (pasta, or rootlessport) in the user's `podman-NNN.scope`; the name
  comes from the container whose network namespace it serves, never "stop the scope";
- Quadlet: conmon in `NAME.service`; the fix is that unit's.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator

import pytest
import yaml

from tests.system.debroot import extracted, root_tarball
from tests.system.guarded import guard_start, listener, portguard, wait_listening
from tests.system.sandbox import JournalEntry, Sandbox, boot, wait_for
from tests.system.test_check import guard_status, registry_for
from tests.system.test_check_docker import busybox_rootfs
from tests.unprivileged import login

IMAGE = "localhost/portguard-test/busybox:1"
USER = "alice"
HTTPD = "/bin/busybox httpd -f -p 80 -h /www"


class PodmanHost:
    def __init__(self, sandbox: Sandbox, suite: str) -> None:
        self.sandbox = sandbox
        self.suite = suite

    def as_user(self, user: str, command: str, timeout: float = 90) -> str:
        """COMMAND through a login shell of USER (a real logind session), output captured."""
        out, rc = f"/tmp/podman-{user}.out", f"/tmp/podman-{user}.rc"
        shell = f"{command} </dev/null >{out} 2>&1; echo $? >{rc}"
        self.sandbox.run(*login(user, shell), timeout=timeout)
        output = self.sandbox.read_file(out)
        status = self.sandbox.read_file(rc).strip()
        assert status == "0", f"{command} as {user} exited {status}:\n{output}"
        return output.strip()

    def podman(self, user: str, *args: str, timeout: float = 90) -> str:
        return self.as_user(user, shlex.join(["podman", *args]), timeout=timeout)

    def run_web(self, user: str, name: str, port: int, *options: str) -> str:
        """`podman run -d --name NAME -p PORT:80` as USER; returns the container's id."""
        self.podman(user, "run", "-d", "--name", name, "-p", f"{port}:80", "--stop-timeout",
                    "1", *options, IMAGE, *HTTPD.split())  # fmt: skip
        wait_listening(self.sandbox, port)
        return self.podman(user, "inspect", "--format", "{{.Id}}", name)


def prepare(sandbox: Sandbox, suite: str) -> None:
    """SANDBOX.md's Podman workarounds, a user for rootless Podman, and the image for both."""
    # Debian 12's crun 1.8 fails its setrlimit calls where root lacks CAP_SYS_RESOURCE (as on
    # these machines); runc, the other runtime Debian 12's podman takes, does not.
    engine = '[engine]\nruntime = "runc"\n' if suite == "bookworm" else ""
    sandbox.write_file("/etc/containers/containers.conf",
                       f"[containers]\npids_limit = 0\n{engine}")  # fmt: skip
    sandbox.write_file(
        "/etc/containers/storage.conf",
        '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\n'
        'graphroot = "/var/lib/containers/storage"\n',
    )
    sandbox.run("sh", "-c", "mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200")
    sandbox.run("useradd", "--create-home", "--shell", "/bin/bash", USER)
    sandbox.write_file("/etc/subuid", f"{USER}:100000:65536\n")
    sandbox.write_file("/etc/subgid", f"{USER}:100000:65536\n")
    # Lingering keeps the user's manager (and so the container) when the session ends.
    sandbox.run("loginctl", "enable-linger", USER)
    shutil.copyfile(busybox_rootfs(), sandbox.root / "tmp" / "rootfs.tar")
    (sandbox.root / "tmp" / "rootfs.tar").chmod(0o644)


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def podman_host(request: pytest.FixtureRequest) -> Iterator[PodmanHost]:
    suite = request.param
    with extracted(root_tarball(f"{suite}-podman")) as root, boot(lowerdir=root) as sandbox:
        prepare(sandbox, suite)
        host = PodmanHost(sandbox, suite)
        for user in ("root", USER):
            host.podman(user, "import", "/tmp/rootfs.tar", IMAGE)
        yield host


def remove(host: PodmanHost, user: str, name: str, port: int) -> None:
    host.podman(user, "rm", "--force", "--time", "1", name)
    wait_for(lambda: not host.sandbox.run("ss", "-Hltn", f"sport = :{port}").stdout.strip()
             or None, timeout=15, what=f"podman to release {port}")  # fmt: skip


def guarded_against(host: PodmanHost, port: int) -> JournalEntry:
    """Start a guarded myapp.service claiming PORT; it must fail at once naming the holder."""
    guarded = guard_start(host.sandbox, registry_for("myapp.service", f"{port}/tcp"),
                          exec_start=listener("0.0.0.0", port))  # fmt: skip
    assert guard_status(host.sandbox, "myapp.service") == 69, guarded.result.status
    return guarded.entry


def assert_no_harm(remedy: str) -> None:
    """The fix never stops a scope, a session or the runtime, and never signals."""
    for harmful in ("kill", "loginctl", "systemctl --user", "disable", ".scope"):
        assert harmful not in remedy, remedy


def why_text(host: PodmanHost, port: int) -> str:
    why = portguard(host.sandbox, "why", f"{port}/tcp")
    assert why.returncode == 1, why.stdout + why.stderr
    return why.stdout.replace("\n           ", " ")  # rows wrapped at 100 columns


def test_a_rootful_container_started_from_a_login_session_is_named_by_conmon(
    podman_host: PodmanHost,
) -> None:
    host, port, name = podman_host, 18101, "web"
    # The session that ran podman ends when runuser returns: the socket's own cgroup is that
    # session's scope (still there while podman 4.3's conmon sits in it; gone under podman 5).
    container = host.run_web("root", name, port)
    assert re.fullmatch(r"[0-9a-f]{64}", container), container
    held = host.sandbox.run("ss", "-Hltnp", f"sport = :{port}").stdout
    assert '"conmon"' in held, held

    fields = guarded_against(host, port)
    print(f"{host.suite}: rootful held by conmon in {fields.get('PORTGUARD_OWNER_UNIT')}")
    assert fields["PORTGUARD_OWNER_KIND"] == "container", fields
    assert fields["PORTGUARD_OWNER_CONTAINER"] == f"{container[:12]} ({name})", fields
    assert fields["PORTGUARD_OWNER_COMM"] == "conmon", fields
    remedy = str(fields["PORTGUARD_REMEDY"])
    assert remedy == f"'podman stop {name}'", remedy
    assert_no_harm(remedy)
    assert f"podman container {container[:12]} ({name})" in str(fields["MESSAGE"]), fields

    text = why_text(host, port)
    assert f"container  podman {container[:12]} ({name}), published by conmon" in text, text
    assert f"fix        'podman stop {name}'" in text, text
    remove(host, "root", name, port)


def rootless_networks(suite: str) -> list[tuple[str, tuple[str, ...]]]:
    """(the forwarder, podman's options) for each rootless network of SUITE's Podman."""
    if suite == "bookworm":
        return [("rootlessport", ())]  # podman 4.3: slirp4netns is the default and only one
    return [("pasta", ()), ("rootlessport", ("--network", "slirp4netns"))]


def test_a_rootless_container_is_named_with_its_user_not_its_scope(
    podman_host: PodmanHost,
) -> None:
    host = podman_host
    for index, (forwarder, options) in enumerate(rootless_networks(host.suite)):
        port, name = 18111 + index, f"webu{index}"
        container = host.run_web(USER, name, port, *options)
        held = host.sandbox.run("ss", "-Hltnp", f"sport = :{port}").stdout
        assert f'"{forwarder}' in held, held  # pasta's comm may be pasta.avx2

        fields = guarded_against(host, port)
        assert fields["PORTGUARD_OWNER_KIND"] == "container", fields
        assert fields["PORTGUARD_OWNER_USER"] == USER, fields
        assert fields["PORTGUARD_OWNER_CONTAINER"] == f"{container[:12]} ({name})", fields
        assert re.fullmatch(r"podman-\d+\.scope", str(fields["PORTGUARD_OWNER_UNIT"])), fields
        remedy = str(fields["PORTGUARD_REMEDY"])
        assert remedy.startswith(f"as {USER}: 'podman stop {name}'"), remedy
        assert "systemctl" not in remedy and "kill" not in remedy, remedy

        text = why_text(host, port)
        assert f"container  podman {container[:12]} ({name})" in text, text
        assert f"as {USER}: 'podman stop {name}'" in text, text
        remove(host, USER, name, port)


QUADLET = """\
[Container]
Image={image}
ContainerName={name}
PublishPort={port}:80
Exec={httpd}
"""


@pytest.mark.parametrize("podman_host", ["trixie"], indirect=True)  # Quadlet came in podman 4.4
def test_a_quadlet_container_is_fixed_through_its_unit(podman_host: PodmanHost) -> None:
    host, port, name = podman_host, 18121, "webq"
    quadlet = QUADLET.format(image=IMAGE, name=name, port=port, httpd=HTTPD)
    host.sandbox.write_file(f"/etc/containers/systemd/{name}.container", quadlet)
    host.sandbox.daemon_reload()
    assert host.sandbox.start(f"{name}.service", timeout=90).active
    wait_listening(host.sandbox, port)
    container = host.podman("root", "inspect", "--format", "{{.Id}}", name)

    fields = guarded_against(host, port)
    assert fields["PORTGUARD_OWNER_KIND"] == "container", fields
    assert fields["PORTGUARD_OWNER_UNIT"] == f"{name}.service", fields
    assert fields["PORTGUARD_OWNER_CONTAINER"] == f"{container[:12]} ({name})", fields
    remedy = str(fields["PORTGUARD_REMEDY"])
    assert remedy.startswith(f"'systemctl stop {name}.service'"), remedy
    assert "systemctl disable" not in remedy, remedy  # a generated unit cannot be disabled

    text = why_text(host, port)
    assert f"'systemctl stop {name}.service'" in text, text

    # init registers the port under the Quadlet unit, and audit finds it held by its own unit.
    written = portguard(host.sandbox, "init")
    assert written.returncode == 0, written.stderr
    units = yaml.safe_load(written.stdout)["units"]
    assert units[f"{name}.service"]["listen"] == [f"0.0.0.0:{port}/tcp"], written.stdout
    host.sandbox.write_file("/etc/portguard/registry.yaml", written.stdout)
    audit = portguard(host.sandbox, "audit", "--format", "json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    rows = {(r["unit"], r["status"]) for r in json.loads(audit.stdout)["claims"]}
    assert (f"{name}.service", "ok") in rows, rows
    host.sandbox.stop(f"{name}.service", timeout=60)

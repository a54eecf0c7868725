"""`portguard check` against a port a Docker container publishes, with a real Docker engine.

The sandbox runs Debian's docker.io (dockerd, containerd, docker-proxy) under its own systemd.
No registry is reachable, so the image is a busybox-static rootfs built on the host from the
Debian package and `docker import`ed inside (SANDBOX.md, "A real Docker engine"). On the
sandbox's overlay root the engine stores it with `vfs`; for a 2 MB image that costs nothing, so
/var/lib/docker gets no tmpfs (overlay2) and docker starts at boot as it would on a host.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.guarded import (
    PORTGUARD_BIN,
    PYTHON,
    as_user,
    guarded_unit,
    install_portguard,
    listener,
    portguard,
    start_guarded,
    wait_listening,
    write_registry,
)
from tests.system.sandbox import JournalEntry, Sandbox, boot, wait_for

PROJECT = Path(__file__).resolve().parents[2]
# Git-ignored; the .deb and the rootfs tarball made from it survive between runs.
CACHE = PROJECT / ".cache" / "docker-image"
ROOTFS_TAR = CACHE / "busybox-rootfs.tar"
# Debian's client, not whatever else is first on PATH (a newer one may sit in /usr/local/bin).
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
IMAGE = "portguard-test/busybox:1"
PORT = 18080
UNIT = "app.service"
UNIT_V6 = "app6.service"  # claims only [::]:PORT, IPV6_V6ONLY
# The guard's wait budget: a held port must fail well before it, without waiting.
WAIT_SECONDS = 5


def _run_host(
    argv: list[str], *, cwd: Path | None = None, timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a build step on the host; with CHECK, a failure fails the test with its output."""
    try:
        completed = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"building the test image: {' '.join(argv)}: {error}", pytrace=False)
    if check and completed.returncode != 0:
        pytest.fail(
            f"building the test image: {' '.join(argv)} exited {completed.returncode}\n"
            f"{completed.stdout}{completed.stderr}",
            pytrace=False,
        )
    return completed


def _busybox_deb() -> Path:
    """Debian's busybox-static package, downloaded once into the cache."""
    debs = sorted(CACHE.glob("busybox-static_*.deb"))
    if debs:
        return debs[-1]
    with tempfile.TemporaryDirectory(dir=CACHE) as download:
        # _apt cannot write into a root-owned temporary directory; downloading as root is fine.
        argv = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", "busybox-static"]
        if _run_host(argv, cwd=Path(download), timeout=120, check=False).returncode != 0:
            # A machine whose packages were all installed long ago may have no package lists.
            _run_host(["apt-get", "update", "-qq"], timeout=300)
            _run_host(argv, cwd=Path(download), timeout=120)
        (deb,) = Path(download).glob("busybox-static_*.deb")
        # A rename is atomic, so a concurrent run sees no half-written package.
        return deb.replace(CACHE / deb.name)


def busybox_rootfs() -> Path:
    """A tarball of a tiny rootfs (bin/busybox, bin/sh, www/index.html) for `docker import`.

    Built once and cached; later calls only check that it is there.
    """
    if ROOTFS_TAR.is_file():
        return ROOTFS_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    deb = _busybox_deb()
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        unpacked, rootfs = Path(work, "unpacked"), Path(work, "rootfs")
        _run_host(["dpkg-deb", "-x", str(deb), str(unpacked)], timeout=60)
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2(unpacked / "bin" / "busybox", rootfs / "bin" / "busybox")
        (rootfs / "bin" / "sh").symlink_to("busybox")
        (rootfs / "www").mkdir()
        (rootfs / "www" / "index.html").write_text("portguard test\n")
        tarball = Path(work, "rootfs.tar")
        _run_host(
            ["tar", "--numeric-owner", "--owner=0", "--group=0",
             "-C", str(rootfs), "-cf", str(tarball), "."],
            timeout=60,
        )  # fmt: skip
        tarball.replace(ROOTFS_TAR)
    return ROOTFS_TAR


def docker(sandbox: Sandbox, *args: str, timeout: float = 30) -> str:
    return sandbox.run(DOCKER, *args, timeout=timeout).stdout.strip()


def wait_docker(sandbox: Sandbox, timeout: float = 30) -> None:
    def answers() -> bool | None:
        return sandbox.run(DOCKER, "version", check=False, timeout=10).returncode == 0 or None

    try:
        wait_for(answers, timeout=timeout, what="the Docker engine to answer")
    except TimeoutError:
        status = sandbox.systemctl(
            "status", "--full", "--lines=30", "docker.service", "containerd.service", check=False
        )
        pytest.fail(f"docker did not come up inside the sandbox:\n{status}", pytrace=False)


def configure_docker(sandbox: Sandbox, *, userland_proxy: bool) -> None:
    """Set the engine's userland-proxy option; the boot started it with the default (on)."""
    if userland_proxy:
        return
    sandbox.write_file("/etc/docker/daemon.json", '{"userland-proxy": false}\n')
    sandbox.systemctl("restart", "docker.service", timeout=60)
    wait_docker(sandbox)


def import_image(sandbox: Sandbox, tarball: Path) -> None:
    # The sandbox's /tmp is its own tmpfs; its root as seen from here reaches it.
    shutil.copyfile(tarball, sandbox.root / "tmp" / tarball.name)
    docker(sandbox, "import", f"/tmp/{tarball.name}", IMAGE, timeout=60)


def listeners(sandbox: Sandbox, port: int) -> str:
    return sandbox.run("ss", "-Hltnp", f"sport = :{port}").stdout.strip()


def guard_status(sandbox: Sandbox, unit: str) -> int | None:
    """The exit status of UNIT's last ExecStartPre= command, as systemd recorded it."""
    value = sandbox.unit_properties(unit, "ExecStartPre")["ExecStartPre"]
    found = re.search(r"\bstatus=(\d+)", value)
    return int(found.group(1)) if found else None


def claim(sandbox: Sandbox, unit: str, listen: str) -> None:
    """A registry in which UNIT alone claims LISTEN (two units' claims on PORT would overlap)."""
    write_registry(
        sandbox,
        f"""\
        version: 1
        defaults:
          wait: {WAIT_SECONDS}s
        units:
          {unit}:
            listen: [{listen}]
            owner: web-team
        """,
    )


def assert_held_by_container(entry: JournalEntry, *, unit: str, container: str, comm: str) -> None:
    """The guard's entry names the container "web" behind docker.service, and no signal."""
    fields = {key: value for key, value in entry.items() if key.startswith("PORTGUARD_")}
    assert fields["PORTGUARD_VERDICT"] == "held", fields
    assert fields["PORTGUARD_UNIT"] == unit, fields
    assert fields["PORTGUARD_PORT"] == str(PORT), fields
    assert fields["PORTGUARD_PROTO"] == "tcp", fields
    assert fields["PORTGUARD_OWNER_KIND"] == "container", fields
    assert fields["PORTGUARD_OWNER_CONTAINER"] == f"{container[:12]} (web)", fields
    assert fields["PORTGUARD_OWNER_UNIT"] == "docker.service", fields
    assert fields["PORTGUARD_OWNER_COMM"] == comm, fields
    remedy = str(fields["PORTGUARD_REMEDY"])
    assert "docker stop web" in remedy, remedy
    assert "kill" not in remedy.lower(), remedy
    assert "container" in str(entry["MESSAGE"]), entry["MESSAGE"]


@pytest.fixture
def docker_sandbox() -> Iterator[Sandbox]:
    """A booted sandbox with Docker running and the test image imported."""
    if not (os.access(DOCKERD, os.X_OK) and os.access(DOCKER, os.X_OK)):
        # Never a skip: a machine meant to run system tests must have the engine.
        pytest.fail(
            "Debian's docker.io is not installed (no dockerd/docker); run tools/setup, or "
            "apt-get install -y --no-install-recommends docker.io",
            pytrace=False,
        )
    tarball = busybox_rootfs()
    with boot(docker=True) as sandbox:
        wait_docker(sandbox)
        import_image(sandbox, tarball)
        yield sandbox


@pytest.mark.parametrize(
    ("userland_proxy", "holder", "v6_holder"),
    [
        # docker-proxy listens twice: on 0.0.0.0 and, IPV6_V6ONLY, on [::].
        (True, "docker-proxy", "docker-proxy"),
        # dockerd itself reserves only the IPv4 port.
        (False, "dockerd", None),
    ],
    ids=["docker-proxy", "no-userland-proxy"],
)
def test_port_published_by_a_container_is_held_by_that_container(
    docker_sandbox: Sandbox, userland_proxy: bool, holder: str, v6_holder: str | None
) -> None:
    sandbox = docker_sandbox
    configure_docker(sandbox, userland_proxy=userland_proxy)
    claim(sandbox, UNIT, f"{PORT}/tcp")
    guarded_unit(sandbox, UNIT, exec_start=listener("::", PORT, v6only=False))
    guarded_unit(sandbox, UNIT_V6, exec_start=listener("::", PORT, v6only=True))
    sandbox.daemon_reload()

    container = docker(
        sandbox, "run", "-d", "--name", "web", "-p", f"{PORT}:80",
        # httpd as the container's PID 1 ignores SIGTERM; a failed test's teardown would
        # otherwise wait out docker's 10 s stop timeout.
        "--stop-timeout", "1", IMAGE,
        "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www",
    )  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{64}", container), container
    wait_listening(sandbox, PORT)
    held = listeners(sandbox, PORT)
    assert f'"{holder}"' in held, held

    guarded = start_guarded(sandbox, UNIT)
    assert guarded.result.result == "exit-code", guarded.result.status
    assert guard_status(sandbox, UNIT) == 69, guarded.result.status
    assert guarded.result.elapsed < WAIT_SECONDS, "a held port must fail without waiting"
    assert_held_by_container(guarded.entry, unit=UNIT, container=container, comm=holder)

    claim(sandbox, UNIT_V6, f'{{port: "[::]:{PORT}/tcp", v6only: true}}')
    guarded_v6 = start_guarded(sandbox, UNIT_V6)
    claim(sandbox, UNIT, f"{PORT}/tcp")
    if v6_holder is None:
        assert guarded_v6.result.active, guarded_v6.result.status
        sandbox.stop(UNIT_V6)
    else:
        assert guard_status(sandbox, UNIT_V6) == 69, guarded_v6.result.status
        assert guarded_v6.entry["PORTGUARD_ADDRESS"] == "::", guarded_v6.entry
        assert_held_by_container(
            guarded_v6.entry, unit=UNIT_V6, container=container, comm=v6_holder
        )

    # `why` tells the same story, with where the proxy forwards to.
    why = portguard(sandbox, "why", f"{PORT}/tcp")
    assert why.returncode == 1, why.stderr
    text = why.stdout.replace("\n           ", " ")  # rows wrapped at 100 columns
    assert f"is held by container {container[:12]} (web)" in text.splitlines()[0], text
    assert f"container  {container[:12]} (web), published by {holder}" in text, text
    assert "'docker stop web'" in text, text
    if holder == "docker-proxy":
        assert re.search(r"forwards to 172\.17\.\d+\.\d+:80\b", text), text

    # The guard only explained: the container and its port are untouched.
    assert docker(sandbox, "inspect", "-f", "{{.State.Running}}", "web") == "true"
    assert f'"{holder}"' in listeners(sandbox, PORT)

    docker(sandbox, "rm", "-f", "web")
    wait_for(
        lambda: not listeners(sandbox, PORT),
        timeout=10,
        what=f"docker to release {PORT}/tcp",
    )
    freed = start_guarded(sandbox, UNIT)
    assert freed.result.active, freed.result.status
    assert freed.entries == [], freed.entries


def test_a_container_on_the_host_network_is_named_and_not_told_to_publish(
    docker_sandbox: Sandbox,
) -> None:
    """`docker run --network host`: the container's own process holds the port, in its scope;
    it publishes nothing, so the fix is to stop it or change its program's port (issue 14)."""
    sandbox = docker_sandbox
    claim(sandbox, UNIT, f"{PORT}/tcp")
    guarded_unit(sandbox, UNIT, exec_start=listener("::", PORT, v6only=False))
    sandbox.daemon_reload()
    container = docker(
        sandbox, "run", "-d", "--name", "web", "--network", "host", "--stop-timeout", "1",
        IMAGE, "/bin/busybox", "httpd", "-f", "-p", str(PORT), "-h", "/www",
    )  # fmt: skip
    wait_listening(sandbox, PORT)

    guarded = start_guarded(sandbox, UNIT)
    assert guard_status(sandbox, UNIT) == 69, guarded.result.status
    fields = guarded.entry
    assert fields["PORTGUARD_OWNER_KIND"] == "container", fields
    assert fields["PORTGUARD_OWNER_UNIT"] == f"docker-{container}.scope", fields
    assert fields["PORTGUARD_OWNER_CONTAINER"] == f"{container[:12]} (web)", fields
    remedy = str(fields["PORTGUARD_REMEDY"])
    assert remedy.startswith("'docker stop web'") and "--network host" in remedy, remedy
    assert "publish" not in remedy and "docker.service" not in remedy, remedy

    why = portguard(sandbox, "why", f"{PORT}/tcp")
    assert why.returncode == 1, why.stderr
    text = why.stdout.replace("\n           ", " ")
    assert f"is held by container {container[:12]} (web) via docker-{container}.scope" in text, text
    assert "'docker stop web': it runs on the host's network" in text, text


def test_without_the_docker_api_the_fix_names_the_publish_filter_not_the_engine(
    docker_sandbox: Sandbox,
) -> None:
    """An unprivileged user cannot read docker.sock: docker-proxy in docker.service holds the
    port, the container cannot be named, and the fix must not be to stop docker.service
    (every container would stop) but `docker ps --filter publish=P` (issue 14)."""
    sandbox = docker_sandbox
    docker(sandbox, "run", "-d", "--name", "web", "-p", f"{PORT}:80", "--stop-timeout", "1",
           IMAGE, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www")  # fmt: skip
    wait_listening(sandbox, PORT)
    install_portguard(sandbox)  # a copy under /usr: the checkout may be root's alone
    why = as_user(sandbox, 65534, PORTGUARD_BIN, "why", f"{PORT}/tcp")
    assert why.returncode == 1, why.stdout + why.stderr
    text = why.stdout.replace("\n           ", " ")
    assert f"'docker ps --filter publish={PORT}'" in text, text
    assert "systemctl stop docker.service" not in text, text
    assert "Docker API did not answer" in text, text
    # docker-proxy's own arguments still say where the port goes.
    assert re.search(r"a container at 172\.17\.\d+\.\d+:80 via docker\.service \(pid \d+ "
                     r"docker-proxy\)", text), text  # fmt: skip

    # The guard of a unit running as an unprivileged User= (as prometheus-node-exporter does)
    # sees the same: the journal names docker.service's container and the filter, no stop.
    claim(sandbox, UNIT, f"{PORT}/tcp")
    guarded_unit(sandbox, UNIT, exec_start=listener("0.0.0.0", PORT),
                 guard=f"{PORTGUARD_BIN} check", extra="User=nobody\n")  # fmt: skip
    sandbox.daemon_reload()
    guarded = start_guarded(sandbox, UNIT)
    assert guard_status(sandbox, UNIT) == 69, guarded.result.status
    fields = guarded.entry
    assert fields["PORTGUARD_OWNER_KIND"] == "container", fields
    assert fields["PORTGUARD_OWNER_UNIT"] == "docker.service", fields
    assert fields["PORTGUARD_OWNER_COMM"] == "docker-proxy", fields
    assert "PORTGUARD_OWNER_CONTAINER" not in fields, fields  # not known: absent, not guessed
    remedy = str(fields["PORTGUARD_REMEDY"])
    assert f"'docker ps --filter publish={PORT}'" in remedy, remedy
    assert "systemctl stop docker.service" not in remedy, remedy
    assert re.search(r"a container at 172\.17\.\d+\.\d+:80 via docker\.service",
                     str(fields["MESSAGE"])), fields["MESSAGE"]  # fmt: skip


ASK = (
    "import socket, sys\n"
    "try:\n"
    " c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    " c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
    " print((c.recv(100).decode(errors='replace') or 'nothing').split()[0])\n"
    "except OSError as e:\n"
    " print(type(e).__name__)"
)
GREET = (
    "import socket, sys; s = socket.socket(socket.AF_INET6); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); "
    "s.bind(('::', int(sys.argv[1]))); s.listen(); "
    "[(c.recv(100), c.sendall(b'service'), c.close()) for c, _ in iter(s.accept, None)]"
)


def test_without_the_userland_proxy_the_kernel_and_the_guard_agree(
    docker_sandbox: Sandbox,
) -> None:
    """Docker with "userland-proxy": false (issue 26): the port is published by a DNAT rule
    alone (Debian 12's docker.io 20.10: `-A DOCKER ! -i docker0 ... -j DNAT`, IPv4 only), and
    dockerd still binds the IPv4 port itself. A client on another host (a netns behind a
    veth) reaches the container on IPv4 and the registered service on IPv6; the guard says the
    same: held on IPv4 (dockerd's socket; held wins over redirected), free on IPv6."""
    sandbox = docker_sandbox
    configure_docker(sandbox, userland_proxy=False)
    sandbox.run("sh", "-c", "ip netns add client && ip link add pg0 type veth peer name pg1 "
                "&& ip link set pg1 netns client && ip addr add 192.0.2.10/24 dev pg0 && "
                "ip addr add 2001:db8::10/64 dev pg0 nodad && ip link set pg0 up && "
                "ip -n client addr add 192.0.2.20/24 dev pg1 && "
                "ip -n client addr add 2001:db8::20/64 dev pg1 nodad && "
                "ip -n client link set pg1 up")  # fmt: skip
    docker(sandbox, "run", "-d", "--name", "web", "-p", f"{PORT}:80", "--stop-timeout", "1",
           IMAGE, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www")  # fmt: skip
    wait_listening(sandbox, PORT)
    sandbox.run("systemd-run", "--unit=unguarded", PYTHON, "-c", GREET, str(PORT))

    def lands(host: str) -> str:
        return sandbox.run("ip", "netns", "exec", "client", PYTHON, "-c", ASK, host,
                           str(PORT)).stdout.strip()  # fmt: skip

    wait_for(lambda: lands("2001:db8::10") == "service" or None, timeout=10,
             what="the IPv6 service up")  # fmt: skip
    assert lands("192.0.2.10").startswith("HTTP/")  # the kernel: IPv4 reaches the container
    sandbox.run("systemctl", "stop", "unguarded")
    nat = sandbox.run("iptables", "-t", "nat", "-S", "DOCKER").stdout
    assert f"--dport {PORT} -j DNAT" in nat, nat
    assert '"dockerd"' in listeners(sandbox, PORT)

    claim(sandbox, UNIT, f"{PORT}/tcp")
    guarded_unit(sandbox, UNIT, exec_start=listener("::", PORT, v6only=False))
    sandbox.daemon_reload()
    held = start_guarded(sandbox, UNIT)
    assert guard_status(sandbox, UNIT) == 69, held.result.status
    assert held.entry["PORTGUARD_VERDICT"] == "held"  # dockerd's own socket, before NAT

    claim(sandbox, UNIT_V6, f'{{port: "[::]:{PORT}/tcp", v6only: true}}')
    guarded_unit(sandbox, UNIT_V6, exec_start=f"{PYTHON} -c {shlex.quote(GREET)} {PORT}")
    sandbox.daemon_reload()
    free = start_guarded(sandbox, UNIT_V6)
    assert free.result.active, free.result.status
    assert free.entries == []  # IPv6 has no DNAT rule here: nothing to say
    assert lands("2001:db8::10") == "service"

"""Do no harm on a real Debian host: stock daemons, their own unit files, the package's generator.

A cached root per release (tools/roots SUITE-services) holds Debian's nginx, apache2,
postgresql, redis-server, chrony, avahi-daemon, dnsmasq, systemd-resolved, docker.io and
containerd, nfs-common and prometheus-node-exporter with the units their packages ship. It
boots as a sandboxed systemd with the .deb installed; then, as a new user would:
`portguard init` -> `lint` clean -> the registry enforced -> every captured unit restarts
with the guard's drop-in in place and the guard having run (redis and chrony guarded, not
declined). Then the real conflicts, each proved twice: under the guard the start fails at
once naming the real owner, and without it (the unit set to `mode: audit`) the daemon itself
fails with EADDRINUSE in its own words.

The boot prepares what a test host needs: one web server and one DNS server enabled at a
time (the other is the conflict), chrony with -x (it must never touch the shared clock),
systemd-resolved answering mDNS beside avahi (two responders sharing 5353/udp), and the NFS
pipefs mount masked (it cannot be mounted in a namespace sandbox).
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.system.debroot import (
    Stopwatch,
    built_package,
    extracted,
    install,
    root_tarball,
)
from tests.system.guarded import listener, plain_unit, wait_listening
from tests.system.sandbox import Sandbox, boot, wait_for
from tests.system.test_unitfiles import READER

REGISTRY = "/etc/portguard/registry.yaml"
GENERATED = "/run/systemd/generator"
SUITES = ("bookworm", "trixie")
# What a unit's own log says when its bind fails, as each daemon words EADDRINUSE.
IN_USE = {
    "apache2.service": r"Address already in use.*make_sock: could not bind|could not bind to "
    r"address.*\n?.*Address already in use|\(98\)Address already in use",
    "dnsmasq.service": r"failed to create listening socket for port 53: Address already in use",
    # pg_ctlcluster refuses first, from the cluster's Unix socket lock on the same port,
    # before postgres's own bind() could get EADDRINUSE.
    "postgresql@second": r"could not bind IPv[46] address .*: Address already in use"
    r"|Port conflict: another instance is already running on \S+ with port 5432",
    "redis-server.service": r"Could not create server TCP listening socket .*6379: bind: "
    r"Address already in use",
    # chronyd does not fail: it runs on without its command port (chronyc cannot reach it).
    "chrony.service": r"Could not open command socket on 127\.0\.0\.1:323",
    "prometheus-node-exporter.service": r"bind: address already in use",
}


# The pools prepare() configures, and what the FTP server serves.
TURN_POOL = (61160, 61175)  # outside the ephemeral range, as an admin picks it
FTP_POOL = (61100, 61103)
FTP_TEXT = "served from a pool\n"

# Daemons whose start goes on without the port they could not bind.
KEEPS_RUNNING = ("chrony.service",)
# Daemons that log to a file of their own, not to the journal.
LOG_FILES = {"redis-server.service": "/var/log/redis/redis-server.log"}


def prepare(root: Path) -> None:
    """The extracted root as a test host runs it (see the module's docstring)."""
    wants = root / "etc/systemd/system/multi-user.target.wants"
    # firewalld (for test_firewalld.py) would filter this host's traffic: not started here.
    for name in ("apache2.service", "dnsmasq.service", "firewalld.service"):
        (wants / name).unlink(missing_ok=True)
    (root / "etc/systemd/system/run-rpc_pipefs.mount").symlink_to("/dev/null")
    chrony = root / "etc/default/chrony"
    chrony.write_text(chrony.read_text().replace('DAEMON_OPTS="-F 1"', 'DAEMON_OPTS="-F 1 -x"'))
    assert '"-F 1 -x"' in chrony.read_text()
    resolved = root / "etc/systemd/resolved.conf.d"
    resolved.mkdir(parents=True, exist_ok=True)
    (resolved / "mdns.conf").write_text("[Resolve]\nMulticastDNS=yes\n")
    # Pools, as an admin narrows them (DESIGN rule 6): coturn's relay ports on loopback, open
    # to anyone (no-auth) and to a peer on loopback; vsftpd's passive ports, anonymous.
    with (root / "etc/turnserver.conf").open("a") as turn:
        turn.write(f"\nlistening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nmin-port={TURN_POOL[0]}\n"
                   f"max-port={TURN_POOL[1]}\nallow-loopback-peers\nno-auth\nno-tls\n"
                   "no-dtls\nno-cli\n")  # fmt: skip
    vsftpd = root / "etc/vsftpd.conf"
    text = vsftpd.read_text().replace("listen=NO", "listen=YES").replace(
        "listen_ipv6=YES", "listen_ipv6=NO").replace(
        "anonymous_enable=NO", "anonymous_enable=YES")  # fmt: skip
    vsftpd.write_text(text + f"pasv_min_port={FTP_POOL[0]}\npasv_max_port={FTP_POOL[1]}\n")
    (root / "srv/ftp/hello.txt").write_text(FTP_TEXT)
    # journal-gatewayd (DynamicUser=, socket-activated): its socket enabled, as an admin does.
    sockets = root / "etc/systemd/system/sockets.target.wants"
    sockets.mkdir(parents=True, exist_ok=True)
    (sockets / "systemd-journal-gatewayd.socket").symlink_to(
        "/usr/lib/systemd/system/systemd-journal-gatewayd.socket"
    )


@dataclass
class Host:
    """A booted services root with portguard installed and init's registry enforced."""

    sandbox: Sandbox
    suite: str
    captured: str  # what `portguard init` printed
    registry: dict[str, Any]  # the registry enforced, as YAML data
    clock: Stopwatch
    mdns_peer: str  # the other mDNS responder beside avahi

    @property
    def postgresql(self) -> str:
        """The release's main cluster's unit (postgresql@15-main on Debian 12, @17 on 13)."""
        units: list[str] = list(self.registry["units"])
        (unit,) = [u for u in units if re.fullmatch(r"postgresql@\d+-main.service", u)]
        return unit

    def write_registry(self, registry: dict[str, Any]) -> None:
        self.sandbox.write_file(REGISTRY, yaml.safe_dump(registry, sort_keys=False))
        self.sandbox.daemon_reload()

    def units(self) -> list[str]:
        return list(self.registry["units"])


def mdns_peer(sandbox: Sandbox) -> str:
    """The mDNS responder beside avahi: systemd-resolved with MulticastDNS=yes (257 opens
    5353/udp for it); resolved 252 opens it only on a link with mDNS and a carrier, which the
    sandbox has not, so there a small responder of ours takes 5353/udp with SO_REUSEADDR, as
    resolved's socket has it."""
    if "systemd-resolve" in sandbox.run("ss", "-Hulpn", "sport = :5353").stdout:
        return "systemd-resolved.service"
    command = listener("0.0.0.0", 5353, proto="udp", reuseaddr=True)
    plain_unit(sandbox, "mdns-responder.service", f"[Service]\nExecStart={command}\n")
    sandbox.daemon_reload()
    assert sandbox.start("mdns-responder.service").active
    wait_for(lambda: "python3" in sandbox.run("ss", "-Hulpn", "sport = :5353").stdout or None,
             timeout=10, what="the mDNS responder")  # fmt: skip
    return "mdns-responder.service"


@pytest.fixture(scope="module", params=SUITES)
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    suite: str = request.param
    deb = built_package()
    clock = Stopwatch(f"{suite}-services")
    with extracted(root_tarball(f"{suite}-services")) as root:
        clock.split("extract")
        prepare(root)
        with boot(lowerdir=root, services=True, boot_timeout=120) as sandbox:
            clock.split("boot")
            installed = install(sandbox, deb)
            assert installed.returncode == 0, installed.stdout + installed.stderr
            # rpc.statd runs when an NFS mount needs it; start it so init meets its ports.
            sandbox.start("rpc-statd.service")
            peer = mdns_peer(sandbox)
            captured = sandbox.run("portguard", "init").stdout
            clock.split("init")
            registry = yaml.safe_load(captured)
            registry["defaults"]["mode"] = "enforce"
            host = Host(sandbox, suite, captured, registry, clock, peer)
            host.write_registry(registry)
            yield host


def test_init_captures_the_daemons_and_leaves_random_ports_out(host: Host) -> None:
    units = host.units()
    assert host.postgresql
    for expected in ("nginx.service", "redis-server.service",
                     "chrony.service", "avahi-daemon.service", "systemd-resolved.service",
                     "prometheus-node-exporter.service", "rpcbind.service"):  # fmt: skip
        assert expected in units, host.captured
    # Ports chosen at random at each start are comments, never claims.
    assert "containerd.service" not in units
    assert "rpc-statd.service" not in units
    assert "rpc-statd.service picks this port at random" in host.captured
    assert re.search(r"containerd\.service: in the ephemeral range", host.captured)
    # Two mDNS responders share 5353/udp: both keep the claim, as shared.
    for unit in ("avahi-daemon.service", host.mdns_peer):
        shared = [e for e in host.registry["units"][unit]["listen"] if isinstance(e, dict)
                  and e["port"].endswith("5353/udp")]  # fmt: skip
        assert len(shared) == 1, unit
        assert (shared[0]["reuseaddr"], shared[0]["reuseport"]) == (True, True), unit


def test_the_enforced_registry_is_lint_clean(host: Host) -> None:
    """No error; the one warning says on what terms the kernel shares 5353/udp between the
    two mDNS responders (both SO_REUSEADDR), which init claimed as shared."""
    linted = host.sandbox.run("portguard", "lint", check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 errors, 1 warning" in linted.stderr, linted.stdout
    (warning,) = linted.stdout.splitlines()
    assert warning.endswith("[share]") and "5353/udp" in warning, warning
    assert "whoever runs them" in warning


def generated_dropin(sandbox: Sandbox, unit: str) -> str | None:
    path = f"{GENERATED}/{unit}.d/50-portguard.conf"
    shown = sandbox.run("cat", path, check=False)
    return shown.stdout if shown.returncode == 0 else None


def _active(sandbox: Sandbox, unit: str) -> bool | None:
    return sandbox.unit_properties(unit, "ActiveState")["ActiveState"] == "active" or None


def guard_run(sandbox: Sandbox, unit: str) -> str:
    """The guard's ExecStartPre= as systemd last ran it (path, argv, status)."""
    pre = sandbox.unit_properties(unit, "ExecStartPre")["ExecStartPre"]
    runs = [r for r in pre.split("} ; {") if "portguard" in r]
    assert len(runs) == 1, pre
    return runs[0]


def test_every_captured_unit_restarts_guarded(host: Host) -> None:
    """The heart of it: no stock unit is blocked by the guard itself."""
    sandbox = host.sandbox
    with host.clock.lap("restart every unit"):
        for unit in host.units():
            dropin = generated_dropin(sandbox, unit)
            assert dropin is not None, (
                f"{unit} is not guarded: "
                + sandbox.run(
                    "journalctl", "-b", "-t", "portguard-generator", "--no-pager", check=False
                ).stdout
            )
            restarted = sandbox.run("systemctl", "restart", unit, check=False, timeout=90)
            assert restarted.returncode == 0, (unit, restarted.stderr, sandbox.systemctl(
                "status", "--full", unit, check=False))  # fmt: skip
            wait_for(partial(_active, sandbox, unit), timeout=30, what=f"{unit} active")
            run = guard_run(sandbox, unit)
            assert "status=0" in run and "code=exited" in run, (unit, run)
    # The identities the drop-ins carry, read from Debian's own unit files.
    redis = generated_dropin(sandbox, "redis-server.service")
    assert redis is not None and redis.rstrip().endswith("+/usr/bin/portguard check --user redis")
    chrony = generated_dropin(sandbox, "chrony.service")
    assert chrony is not None and chrony.rstrip().endswith("+/usr/bin/portguard check")
    assert sandbox.run("journalctl", "-b", "-t", "portguard-generator", "-p", "warning",
                       "--no-pager", "-q", check=False).stdout == ""  # fmt: skip


@dataclass
class Conflict:
    """VICTIM claims PORTS (its own claims in the registry), which HOLDER holds."""

    victim: str
    listen: list[Any]
    holder: str  # the unit the journal must name
    start_holder: Callable[[Host], None]
    stop_holder: Callable[[Host], None]


def enforce_for(host: Host, victim: str, listen: list[Any], holder: str, mode: str) -> None:
    """The registry with VICTIM claiming LISTEN in MODE, the HOLDER's overlapping claims
    dropped (the registry gives the port to the victim; the holder is now the squatter)."""
    registry = yaml.safe_load(yaml.safe_dump(host.registry))
    units = registry["units"]
    units.pop(holder, None)
    units[victim] = {"listen": listen, "mode": mode}
    host.write_registry(registry)


def held_start(host: Host, conflict: Conflict) -> dict[str, Any]:
    sandbox = host.sandbox
    enforce_for(host, conflict.victim, conflict.listen, conflict.holder, "enforce")
    assert generated_dropin(sandbox, conflict.victim) is not None
    cursor = sandbox.journal_cursor()
    sandbox.run("systemctl", "start", conflict.victim, check=False, timeout=90)
    entries = [e for e in sandbox.journal(conflict.victim, since_cursor=cursor)
               if e.get("PORTGUARD_VERDICT")]  # fmt: skip
    assert entries, sandbox.systemctl("status", "--full", conflict.victim, check=False)
    return entries[0]


def unguarded_failure(host: Host, conflict: Conflict) -> str:
    """The victim started without the guard: its own log, which must say EADDRINUSE."""
    sandbox = host.sandbox
    sandbox.run("systemctl", "reset-failed", conflict.victim, check=False)
    enforce_for(host, conflict.victim, conflict.listen, conflict.holder, "audit")
    assert generated_dropin(sandbox, conflict.victim) is None
    log_file = LOG_FILES.get(conflict.victim)
    if log_file:
        sandbox.run("truncate", "-s", "0", log_file)
    cursor = sandbox.journal_cursor()
    sandbox.run("systemctl", "start", conflict.victim, check=False, timeout=90)
    seen: list[str] = []

    def said_so() -> str | None:
        text = "\n".join(str(e.get("MESSAGE", "")) for e in
                         sandbox.journal(conflict.victim, since_cursor=cursor))  # fmt: skip
        if log_file:
            text += "\n" + sandbox.read_file(log_file)
        seen[:] = [text]
        failed = conflict.victim in KEEPS_RUNNING or "Failed to start" in text
        words = IN_USE[
            re.sub(r"@\d+-", "@", conflict.victim.removesuffix(".service"))
            if conflict.victim.startswith("postgresql@")
            else conflict.victim
        ]
        return text if failed and re.search(words, text) else None

    try:
        return wait_for(said_so, timeout=30, what=f"{conflict.victim}'s own EADDRINUSE line")
    except TimeoutError:
        raise AssertionError(f"{conflict.victim} said instead:\n{seen[0]}") from None


def restore(host: Host, conflict: Conflict) -> None:
    sandbox = host.sandbox
    sandbox.run("systemctl", "stop", conflict.victim, check=False, timeout=60)
    sandbox.run("systemctl", "reset-failed", conflict.victim, check=False)
    conflict.stop_holder(host)
    host.write_registry(host.registry)


def squatter(port: int, proto: str = "tcp") -> Callable[[Host], None]:
    """A plain service holding 0.0.0.0:PORT without SO_REUSEADDR."""

    def start(host: Host) -> None:
        command = listener("0.0.0.0", port, proto=proto, reuseaddr=False)
        plain_unit(host.sandbox, "squatter.service", f"[Service]\nExecStart={command}\n")
        host.sandbox.daemon_reload()
        assert host.sandbox.start("squatter.service").active
        wait_listening(host.sandbox, port, proto)
        held = host.sandbox.run("ss", "-Hanp", f"sport = :{port}").stdout
        assert "python3" in held, held

    return start


def stop_unit(unit: str) -> Callable[[Host], None]:
    def stop(host: Host) -> None:
        host.sandbox.run("systemctl", "stop", unit, check=False, timeout=60)

    return stop


def run_conflict(host: Host, conflict: Conflict) -> tuple[dict[str, Any], str]:
    # A daemon already running (redis, chrony, node-exporter) is stopped first, so the holder
    # can take its port; the victim's next start is what the guard judges.
    host.sandbox.run("systemctl", "stop", conflict.victim, check=False, timeout=60)
    conflict.start_holder(host)
    try:
        entry = held_start(host, conflict)
        own_words = unguarded_failure(host, conflict)
    finally:
        restore(host, conflict)
    return entry, own_words


def assert_held_by(entry: dict[str, Any], holder: str) -> None:
    assert entry["PORTGUARD_VERDICT"] == "held", entry
    assert entry["PORTGUARD_OWNER_UNIT"] == holder, entry


def test_nginx_holds_80_and_apache2_is_blocked_naming_it(host: Host) -> None:
    conflict = Conflict("apache2.service", ["80/tcp"], "nginx.service",
                        lambda h: None, lambda h: None)  # fmt: skip
    entry, _ = run_conflict(host, conflict)
    assert_held_by(entry, "nginx.service")
    assert "nginx.service" in str(entry["PORTGUARD_REMEDY"]), entry


def test_resolved_holds_53_and_dnsmasq_is_blocked_naming_it(host: Host) -> None:
    conflict = Conflict("dnsmasq.service", ["53/udp", "53/tcp"], "systemd-resolved.service",
                        lambda h: None, lambda h: None)  # fmt: skip
    entry, _ = run_conflict(host, conflict)
    assert_held_by(entry, "systemd-resolved.service")


def test_a_second_postgresql_cluster_on_5432_is_blocked_naming_the_first(host: Host) -> None:
    version = host.postgresql.split("@")[1].split("-")[0]
    made = host.sandbox.run("pg_createcluster", version, "second", "-p", "5432", check=False,
                            timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    host.sandbox.daemon_reload()
    conflict = Conflict(f"postgresql@{version}-second.service",
                        ["127.0.0.1:5432/tcp", "[::1]:5432/tcp"], host.postgresql,
                        lambda h: None, lambda h: None)  # fmt: skip
    entry, _ = run_conflict(host, conflict)
    assert_held_by(entry, host.postgresql)


def test_something_on_6379_blocks_redis_naming_it(host: Host) -> None:
    conflict = Conflict("redis-server.service", ["127.0.0.1:6379/tcp", "[::1]:6379/tcp"],
                        "squatter.service", squatter(6379),
                        stop_unit("squatter.service"))  # fmt: skip
    entry, _ = run_conflict(host, conflict)
    assert_held_by(entry, "squatter.service")
    host.sandbox.run("systemctl", "start", "redis-server.service", check=False, timeout=60)


def test_something_on_323_udp_blocks_chrony_naming_it(host: Host) -> None:
    conflict = Conflict("chrony.service", ["127.0.0.1:323/udp", "[::1]:323/udp"],
                        "squatter.service", squatter(323, "udp"),
                        stop_unit("squatter.service"))  # fmt: skip
    entry, _ = run_conflict(host, conflict)
    assert_held_by(entry, "squatter.service")
    host.sandbox.run("systemctl", "start", "chrony.service", check=False, timeout=60)


BUSYBOX_IMAGE = textwrap.dedent("""\
    set -e
    rm -rf /tmp/img && mkdir -p /tmp/img/bin /tmp/img/www
    cp /bin/busybox /tmp/img/bin/busybox && ln -s busybox /tmp/img/bin/sh
    echo portguard > /tmp/img/www/index.html
    tar -C /tmp/img -c . | docker import - portguard-test:1 >/dev/null
""")


def test_a_docker_container_on_9100_blocks_node_exporter(host: Host) -> None:
    def publish(h: Host) -> None:
        h.sandbox.run("sh", "-c", BUSYBOX_IMAGE, timeout=120)
        h.sandbox.run("docker", "run", "-d", "--name", "metrics-squatter", "-p", "9100:80",
                      "portguard-test:1", "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www",
                      timeout=120)  # fmt: skip
        wait_listening(h.sandbox, 9100)

    def remove(h: Host) -> None:
        h.sandbox.run("docker", "rm", "-f", "metrics-squatter", check=False, timeout=60)

    conflict = Conflict("prometheus-node-exporter.service", ["9100/tcp"], "docker.service",
                        publish, remove)  # fmt: skip
    entry, _ = run_conflict(host, conflict)
    assert entry["PORTGUARD_VERDICT"] == "held", entry
    # docker-proxy holds the port for the container; the guard, root under `+`, names it.
    assert entry["PORTGUARD_OWNER_KIND"] == "container", entry
    assert "metrics-squatter" in str(entry.get("PORTGUARD_OWNER_CONTAINER", "")), entry
    assert "docker.service" not in str(entry["PORTGUARD_REMEDY"]).replace(
        "systemctl stop docker", "!!"
    ), entry
    host.sandbox.run("systemctl", "start", "prometheus-node-exporter.service", check=False)


def test_avahi_starts_beside_another_mdns_responder(host: Host) -> None:
    """Both set SO_REUSEADDR on 5353/udp; the kernel lets both bind, and so must the guard."""
    sandbox = host.sandbox
    peer = "systemd-resolve" if host.mdns_peer == "systemd-resolved.service" else "python3"
    shared = sandbox.run("ss", "-Hulpn", "sport = :5353").stdout
    assert peer in shared, shared
    restarted = sandbox.run("systemctl", "restart", "avahi-daemon.service", check=False)
    assert restarted.returncode == 0, sandbox.systemctl("status", "avahi-daemon", check=False)
    assert "status=0" in guard_run(sandbox, "avahi-daemon.service")
    shared = sandbox.run("ss", "-Hulpn", "sport = :5353").stdout
    assert "avahi-daemon" in shared and peer in shared, shared


def test_the_reader_reads_debians_units_as_systemd_does(host: Host) -> None:
    """Fragment, drop-ins (the generator's own among them) and User= of every stock unit."""
    sandbox = host.sandbox
    shown = {}
    for unit in [*host.units(), "apache2.service", "dnsmasq.service", "rpc-statd.service"]:
        props = sandbox.unit_properties(unit, "FragmentPath", "DropInPaths", "User")
        shown[unit] = [props["FragmentPath"], shlex.split(props["DropInPaths"]), props["User"]]
    read = sandbox.run("python3", "-c", READER, json.dumps(shown),
                       env={"PYTHONPATH": "/usr/lib/python3/dist-packages"})  # fmt: skip
    views = json.loads(read.stdout)
    for unit in shown:
        assert views[unit]["ours"] == views[unit]["systemd"], unit


FORWARD = "port=18080:proto=tcp:toport=18090"


def another_host(sandbox: Sandbox, *, gone: bool = False) -> None:
    """A client namespace at 192.0.2.20 behind a veth, this host at 192.0.2.10; or, GONE,
    both removed again (the module's sandbox goes on to other tests)."""
    if gone:
        sandbox.run("ip", "netns", "delete", "client", check=False)
        sandbox.run("ip", "link", "delete", "pg0", check=False)
        return
    sandbox.run("sh", "-c", "ip netns add client && ip link add pg0 type veth peer name pg1 "
                "&& ip link set pg1 netns client && ip addr add 192.0.2.10/24 dev pg0 && "
                "ip link set pg0 up && ip -n client addr add 192.0.2.20/24 dev pg1 && "
                "ip -n client link set pg1 up")  # fmt: skip


def test_a_firewalld_forward_port_is_redirected_and_its_fix_works(host: Host) -> None:
    """Debian's firewalld (nftables backend, table inet firewalld), started for this test
    only: a zone's forward port takes a port with no socket. A client in another namespace
    lands on the forward's target; `check` says `redirected`, names the zone and gives
    firewall-cmd's own removal, which, run, frees the port."""
    sandbox = host.sandbox
    another_host(sandbox)
    sandbox.run("systemd-run", "--unit=forward-target", "python3", "-c", GREETER, "18090")
    registry = "version: 1\nunits:\n  fwapp.service:\n    listen: [18080/tcp]\n"
    sandbox.write_file("/etc/portguard-fw/registry.yaml", registry)
    check = ["portguard", "check", "fwapp.service", "--registry", "/etc/portguard-fw", "--json"]
    try:
        assert sandbox.start("firewalld.service", timeout=90).active
        sandbox.run("firewall-cmd", "--zone=public", f"--add-forward-port={FORWARD}")
        landed = sandbox.run("ip", "netns", "exec", "client", "python3", "-c", ASK,
                             "192.0.2.10", "18080").stdout.strip()  # fmt: skip
        assert landed == "target", landed  # the kernel: the forward takes it

        verdict = sandbox.run(*check, check=False)
        assert verdict.returncode == 69, verdict.stdout + verdict.stderr
        data = json.loads(verdict.stdout)
        assert (data["verdict"], data["owner_kind"]) == ("redirected", "firewalld"), data
        assert data["owner_name"] == "firewalld zone public's forward port", data
        assert data["rule_table"] == "firewalld", data
        remedy = data["remedy"]
        assert f"firewall-cmd --zone=public --remove-forward-port={FORWARD}" in remedy, remedy

        # The fix it gives, as given: then the port is the service's again.
        sandbox.run("firewall-cmd", "--zone=public", f"--remove-forward-port={FORWARD}")
        assert sandbox.run(*check, check=False).returncode == 0
    finally:
        sandbox.run("systemctl", "stop", "firewalld.service", "forward-target.service",
                    check=False, timeout=90)  # fmt: skip
        another_host(sandbox, gone=True)


GREETER = (
    "import socket, sys; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(); "
    "[(c.sendall(b'target'), c.recv(1), c.close()) for c, _ in iter(s.accept, None)]"
)
ASK = (
    "import socket, sys\n"
    "try:\n c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    " print(c.recv(100).decode() or 'nothing')\n"
    "except OSError as e:\n print(type(e).__name__)"
)


def test_docker_without_the_userland_proxy_agrees_with_the_kernel(host: Host) -> None:
    """Each release's docker.io with "userland-proxy": false: what holds a published port
    (a socket of dockerd's, or nothing), which NAT rule takes it, where a client from another
    host lands, and what `check` says of a unit claiming it (issue 26). Held wins when a
    socket exists; with none the DNAT rule alone must make the verdict."""
    sandbox = host.sandbox
    sandbox.write_file("/etc/docker/daemon.json", '{"userland-proxy": false}\n')
    sandbox.run("systemctl", "restart", "docker.service", timeout=120)
    another_host(sandbox)
    registry = "version: 1\nunits:\n  dockapp.service:\n    listen: [18081/tcp]\n"
    sandbox.write_file("/etc/portguard-dk/registry.yaml", registry)
    try:
        sandbox.run("sh", "-c", BUSYBOX_IMAGE, timeout=120)
        sandbox.run("docker", "run", "-d", "--name", "noproxy", "-p", "18081:80",
                    "portguard-test:1", "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www",
                    timeout=120)  # fmt: skip
        holders = sandbox.run("ss", "-Hltnp", "sport = :18081").stdout
        landed = sandbox.run("ip", "netns", "exec", "client", "python3", "-c", ASK_HTTP,
                             "192.0.2.10", "18081").stdout.strip()  # fmt: skip
        assert landed.startswith("HTTP/"), landed  # the kernel: the container answers
        verdict = sandbox.run("portguard", "check", "dockapp.service", "--registry",
                              "/etc/portguard-dk", "--json", check=False)  # fmt: skip
        data = json.loads(verdict.stdout)
        print(
            f"\n{host.suite}: docker {sandbox.run('dockerd', '--version').stdout.strip()}; "
            f"holders: {holders.strip() or 'none'}; verdict {data['verdict']}, owner "
            f"{data.get('owner_kind')}/{data.get('owner_name') or data.get('owner_comm')}"
        )
        if holders.strip():
            assert data["verdict"] == "held", data  # a socket first: bind() fails
        else:
            assert data["verdict"] in ("redirected", "partly-redirected"), data
            assert data.get("owner_kind") in ("docker", "nat-rule"), data
    finally:
        sandbox.run("docker", "rm", "-f", "noproxy", check=False, timeout=60)
        sandbox.run("rm", "-f", "/etc/docker/daemon.json")
        sandbox.run("systemctl", "restart", "docker.service", check=False, timeout=120)
        another_host(sandbox, gone=True)


ASK_HTTP = (
    "import socket, sys\n"
    "try:\n c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    " c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
    " print((c.recv(100).decode(errors='replace') or 'nothing').split()[0])\n"
    "except OSError as e:\n print(type(e).__name__)"
)


# --- pools a daemon binds on demand (DESIGN rule 6), DynamicUser= units -----------------------

# One process holding sockets, as a plain service: (kind, address, port) each; "listen" and
# "udp" hold a port, "client" is a connection bound to a port of the pool (to PEER).
HOLDERS = """\
import socket, sys, time
held = []
for spec in sys.argv[1:]:
    kind, address, port, peer = spec.split(",")
    tcp = kind in ("listen", "client")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    if tcp:  # past the TIME-WAIT of the pool's last transfers, as vsftpd's own binds pass it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, int(port)))
    if kind == "listen":
        s.listen()
    elif peer:
        s.connect(("127.0.0.1", int(peer)))
    held.append(s)
time.sleep(10**6)
"""


def hold(host: Host, unit: str, *specs: str) -> None:
    """UNIT: a plain service holding SPECS (HOLDERS' form), started and checked to hold them."""
    sandbox = host.sandbox
    sandbox.write_file("/usr/local/lib/holders.py", HOLDERS)
    command = shlex.join(["/usr/bin/python3", "/usr/local/lib/holders.py", *specs])
    plain_unit(sandbox, unit, f"[Service]\nExecStart={command}\n")
    sandbox.daemon_reload()
    assert sandbox.start(unit).active, sandbox.systemctl("status", unit, check=False)
    ports = [spec.split(",")[2] for spec in specs]

    def holding() -> bool | None:
        shown = sandbox.run("ss", "-Htuanp").stdout
        return all(f":{p} " in shown for p in ports) or None

    wait_for(holding, timeout=10, what=f"{unit} holding {ports}")


def pool_start(host: Host, unit: str) -> tuple[bool, dict[str, Any] | None]:
    """Start UNIT guarded: whether it is active, and the guard's journal entry if any."""
    sandbox = host.sandbox
    sandbox.run("systemctl", "reset-failed", unit, check=False)
    cursor = sandbox.journal_cursor()
    sandbox.run("systemctl", "start", unit, check=False, timeout=90)
    entries = [e for e in sandbox.journal(unit, since_cursor=cursor)
               if e.get("PORTGUARD_VERDICT")]  # fmt: skip
    return _active(sandbox, unit) is True, (entries[0] if entries else None)


def turn_allocation(host: Host) -> str:
    """A TURN allocation on coturn with a peer on loopback, relaying three messages."""
    sandbox = host.sandbox
    sandbox.run("systemd-run", "--unit", "turn-peer", "--collect", "/usr/bin/turnutils_peer",
                "-L", "127.0.0.1", "-p", "3480", check=False)  # fmt: skip
    wait_for(lambda: ":3480 " in sandbox.run("ss", "-Hulnp").stdout or None, timeout=10,
             what="turnutils_peer")  # fmt: skip
    done = sandbox.run(
        "timeout",
        "20",
        "turnutils_uclient",
        "-c",
        "-n",
        "3",
        "-m",
        "1",
        "-e",
        "127.0.0.1",
        "-r",
        "3480",
        "127.0.0.1",
        check=False,
        timeout=30,
    )
    return done.stdout + done.stderr


def passive_transfer(host: Host) -> tuple[str, str]:
    """A passive-mode download: what came, and the dialogue (curl -v)."""
    done = host.sandbox.run("curl", "-v", "-sS", "-m", "20", "ftp://127.0.0.1/hello.txt",
                            check=False, timeout=30)  # fmt: skip
    return done.stdout, done.stderr


def test_init_claims_the_daemons_pools_and_guards_the_dynamic_user_unit(host: Host) -> None:
    units = host.registry["units"]
    turn = f"127.0.0.1:{TURN_POOL[0]}-{TURN_POOL[1]}/udp"
    assert {"port": turn, "pool": True} in units["coturn.service"]["listen"], host.captured
    ftp = f"0.0.0.0:{FTP_POOL[0]}-{FTP_POOL[1]}/tcp"  # listen=YES: IPv4 alone
    assert {"port": ftp, "pool": True} in units["vsftpd.service"]["listen"], host.captured
    gateway = units["systemd-journal-gatewayd.service"]
    assert gateway["via"] == ["systemd-journal-gatewayd.socket"], host.captured
    dropin = generated_dropin(host.sandbox, "systemd-journal-gatewayd.service")
    assert dropin is not None and dropin.rstrip().endswith("portguard check --user dynamic")


@dataclass
class PoolStory:
    """A daemon whose pool others hold part of, then all of; what it is asked to serve."""

    unit: str
    around: tuple[str, ...]  # holders in the pool, leaving min-free of it (HOLDERS' form)
    everything: tuple[str, ...]  # holders of the whole pool
    serves: Callable[[Host], None]  # asserts the daemon served, around the holders
    cannot_serve: Callable[[Host, Callable[[], str]], None]  # asserts it could not; given its log
    stop_also: tuple[str, ...] = ()


def pool_story(host: Host, story: PoolStory) -> dict[str, Any]:
    """The daemon starts guarded and serves around holders in its pool; with the pool wholly
    taken the guard fails its start (the entry returned); without the guard it starts but
    cannot serve: the daemon itself is the oracle (DESIGN rule 6)."""
    sandbox, unit = host.sandbox, story.unit
    extra = ("pool-squatter.service", "pool-hog.service", *story.stop_also)
    sandbox.run("systemctl", "stop", unit, timeout=60)
    try:
        hold(host, "pool-squatter.service", *story.around)
        active, entry = pool_start(host, unit)
        assert active and entry is None, entry
        assert "status=0" in guard_run(sandbox, unit)
        story.serves(host)
        sandbox.run("systemctl", "stop", unit, *extra, check=False, timeout=60)

        hold(host, "pool-hog.service", *story.everything)
        active, exhausted = pool_start(host, unit)
        assert not active and exhausted is not None
        assert exhausted["PORTGUARD_VERDICT"] == "exhausted", exhausted
        assert exhausted["PORTGUARD_OWNER_UNIT"] == "pool-hog.service", exhausted

        enforce_for(host, unit, host.registry["units"][unit]["listen"], "", "audit")
        cursor = sandbox.journal_cursor()
        active, _ = pool_start(host, unit)
        assert active  # the daemon starts: a pool is bound on demand

        def said() -> str:
            return "\n".join(str(e.get("MESSAGE", "")) for e in
                             sandbox.journal(unit, since_cursor=cursor))  # fmt: skip

        story.cannot_serve(host, said)
    finally:
        sandbox.run("systemctl", "stop", unit, *extra, check=False, timeout=60)
        host.write_registry(host.registry)
        sandbox.run("systemctl", "reset-failed", check=False)
        sandbox.run("systemctl", "start", unit, check=False, timeout=60)
    return exhausted


def test_coturn_relays_from_its_pool_around_holders_and_an_exhausted_pool_is_named(
    host: Host,
) -> None:
    first, last = TURN_POOL

    def relays(h: Host) -> None:
        # coturn 4.6.1 (Debian 12 and 13) takes its pool's ports in an order shuffled at
        # start, and when the one it took is held it retries that same port until the
        # allocation fails (508) instead of moving on; the next allocation takes the next
        # port. So a holder in its pool costs it one failed allocation at most, once: its own
        # limit, which a guard that lets it start does not change.
        tries = [turn_allocation(h)]
        while "tot_recv_msgs=3" not in tries[-1] and len(tries) < len(around) + 1:
            tries.append(turn_allocation(h))
        assert "tot_send_msgs=3, tot_recv_msgs=3" in tries[-1], tries
        print(f"\n{h.suite}: coturn relayed at allocation {len(tries)} (holders: {len(around)})")

    def cannot(h: Host, said: Callable[[], str]) -> None:
        refused = turn_allocation(h)
        assert "error 508 (Cannot create socket)" in refused, refused
        ports = "|".join(str(p) for p in range(first, last + 1))
        words = rf"Trying to bind fd \d+ to <127\.0\.0\.1:(?:{ports})>: errno=98"
        wait_for(lambda: re.search(words, said()), timeout=10, what="coturn's own errno=98")

    around = (f"udp,127.0.0.1,{first + 5},", f"udp,127.0.0.1,{first + 10},3480")
    exhausted = pool_story(host, PoolStory(
        "coturn.service",
        around,
        tuple(f"udp,127.0.0.1,{p}," for p in range(first, last + 1)),
        relays, cannot, stop_also=("turn-peer.service",),
    ))  # fmt: skip
    assert exhausted["PORTGUARD_POOL"] == f"127.0.0.1:{first}-{last}/udp", exhausted
    assert exhausted["PORTGUARD_POOL_IN_USE"] == str(last - first + 1), exhausted


def test_vsftpd_transfers_through_its_passive_pool_and_an_exhausted_pool_is_named(
    host: Host,
) -> None:
    first, last = FTP_POOL

    def transfers(h: Host) -> None:
        assert passive_transfer(h)[0] == FTP_TEXT

    def cannot(h: Host, said: Callable[[], str]) -> None:
        got, dialogue = passive_transfer(h)
        assert got == "" and "500 OOPS: vsf_sysutil_bind" in dialogue, dialogue

    pool_story(host, PoolStory(
        "vsftpd.service",
        (f"listen,0.0.0.0,{first},", f"client,127.0.0.1,{first + 1},80"),
        tuple(f"listen,0.0.0.0,{p}," for p in range(first, last + 1)),
        transfers, cannot,
    ))  # fmt: skip


def test_a_dynamic_user_unit_whose_port_is_taken_fails_naming_the_holder(host: Host) -> None:
    """Journal-gatewayd (DynamicUser=, socket-activated) restarts guarded in
    test_every_captured_unit_restarts_guarded; here a DynamicUser= service binding its own
    port, which a squatter holds."""
    sandbox = host.sandbox
    unit, port = "dynamic-app.service", 18230
    command = listener("0.0.0.0", port)
    plain_unit(sandbox, unit, f"[Service]\nDynamicUser=yes\nExecStart={command}\n")
    registry = yaml.safe_load(yaml.safe_dump(host.registry))
    registry["units"][unit] = {"listen": [f"{port}/tcp"]}
    host.write_registry(registry)
    try:
        dropin = generated_dropin(sandbox, unit)
        assert dropin is not None and dropin.rstrip().endswith("check --user dynamic"), dropin
        active, entry = pool_start(host, unit)
        assert active and entry is None, entry
        sandbox.run("systemctl", "stop", unit, timeout=60)
        squatter(port)(host)
        active, entry = pool_start(host, unit)
        assert not active and entry is not None
        assert entry["PORTGUARD_VERDICT"] == "held", entry
        assert entry["PORTGUARD_OWNER_UNIT"] == "squatter.service", entry
    finally:
        sandbox.run("systemctl", "stop", unit, "squatter.service", check=False, timeout=60)
        sandbox.run("systemctl", "reset-failed", check=False)
        host.write_registry(host.registry)

"""A busy host in a sandbox: bench/bench.py's census and attribution rows (issue 15), and
test_busy_host.py's check of them against the kernel's own view.

Booted as tests/system/sandbox.py boots a real systemd in namespaces (nothing on this machine
changes), then loaded like the "big host" the issue measured on:

- 200 services, each holding 3 listening ports (a few hold 4: 605 in all) from 10 processes
  (a main one and 9 workers that inherit its ~200 fds, as prefork servers do): 2,000
  processes with ~200 fds each;
- 16,000 loopback connections to those ports, kept open by 4 client services: twice as
  many ESTABLISHED sockets, half of them accepted on the services' own ports;
- two churning services whose server side closes first, keeping up to 19,000 sockets in
  TIME-WAIT on their ports (each lasts 60 s; one Python loop makes ~250 a second, so the
  count reached is reported, not assumed);
- a 1,000-unit registry with 1,400 claims: every listener, and filler units on free ports.

`empty=True` builds the same sandbox and registry without the load (the idle host), and
`load=SMALL` a smaller load of the same shape (the system test's).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tests.system.sandbox import Sandbox, boot, wait_for


@dataclass(frozen=True)
class Load:
    services: int = 200
    listeners: int = 605
    workers: int = 9
    fds: int = 190
    connections: int = 16_000
    time_wait: int = 19_000


FULL = Load()
# The system test's: the same shapes, small enough to build in seconds.
SMALL = Load(services=40, listeners=121, workers=2, fds=20, connections=2_000, time_wait=1_500)
CLIENTS = 4
UNITS = 1_000
CLAIMS = 1_400
FIRST_PORT = 10_000
FILLER_PORT = 12_000
CHURN_PORTS = (9_998, 9_999)  # one churning service each: one Python loop makes ~250/s
PYTHON = "/usr/bin/python3"
DIR = "/run/bighost"

SERVICE = r"""
import os, socket, subprocess, sys, threading, time
listeners = []
for port in map(int, sys.argv[1].split(",")):
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(4096)
    listeners.append(sock)
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(int(sys.argv[2]))]
kept = []
def accept(sock):
    while True:
        kept.append(sock.accept()[0])
for sock in listeners:
    threading.Thread(target=accept, args=(sock,), daemon=True).start()
inherited = [*fds, *(sock.fileno() for sock in listeners)]
workers = [subprocess.Popen(["sleep", "infinity"], pass_fds=inherited)
           for _ in range(int(sys.argv[3]))]
while True:
    time.sleep(3600)
"""

CLIENT = r"""
import socket, sys, time
ports = [int(p) for p in sys.argv[1].split(",")]
kept = []
for index in range(int(sys.argv[2])):
    kept.append(socket.create_connection(("::1", ports[index % len(ports)])))
while True:
    time.sleep(3600)
"""

CHURN = r"""
import socket, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
server = socket.socket(socket.AF_INET6)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("::", port))
server.listen(128)
started, made = time.monotonic(), 0
while True:
    client = socket.create_connection(("::1", port))
    accepted = server.accept()[0]
    accepted.close()  # the server closes first: its side stays in TIME-WAIT, on `port`
    client.close()
    made += 1
    ahead = made / rate - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)
"""


@dataclass(frozen=True)
class BigHost:
    sandbox: Sandbox
    registry: str  # the registry directory inside
    service_ports: tuple[tuple[int, ...], ...]  # each service's listening ports
    load: Load = FULL

    def counts(self) -> dict[str, int]:
        """What the kernel holds now: listeners, established and TIME-WAIT TCP sockets."""
        counts = {}
        for name, state in (("listen", "listening"), ("established", "established"),
                            ("time-wait", "time-wait")):  # fmt: skip
            out = self.sandbox.run("ss", "-Htan", "state", state, timeout=60).stdout
            counts[name] = len(out.splitlines())
        counts["processes"] = len(self.sandbox.run("ps", "-e", "--no-headers").stdout.splitlines())
        return counts


def ports_of_services(load: Load) -> list[tuple[int, ...]]:
    """LOAD's listeners over its services: 3 each, the first few one more."""
    extra = load.listeners - 3 * load.services
    ports, port = [], FIRST_PORT
    for index in range(load.services):
        count = 3 + (index < extra)
        ports.append(tuple(range(port, port + count)))
        port += count
    return ports


def registry_text(service_ports: Sequence[Sequence[int]]) -> str:
    """UNITS units with CLAIMS claims: the services' listeners, then filler units."""
    lines = ["version: 1", "units:"]
    claims = 0
    for index, ports in enumerate(service_ports):
        lines += [
            f"  big-{index:03d}.service:",
            f"    listen: [{', '.join(f'{p}/tcp' for p in ports)}]",
        ]
        claims += len(ports)
    for port in CHURN_PORTS:
        lines += [f"  churn-{port}.service:", f"    listen: [{port}/tcp]"]
    claims += len(CHURN_PORTS)
    fillers = UNITS - len(service_ports) - len(CHURN_PORTS)
    port = FILLER_PORT
    for index in range(fillers):
        left = CLAIMS - claims
        count = 1 + (left > fillers - index)  # spread the claims still to give
        listen = ", ".join(f"{p}/tcp" for p in range(port, port + count))
        lines += [f"  fill-{index:03d}.service:", f"    listen: [{listen}]"]
        claims += count
        port += count
    return "\n".join(lines) + "\n"


def _unit(description: str, command: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        [Unit]
        Description={description}

        [Service]
        ExecStart={command}
        LimitNOFILE=16384
        {extra}
        """
    )


@contextmanager
def big_host(*, empty: bool = False, docker: bool = False, load: Load = FULL) -> Iterator[BigHost]:
    """The busy host (or with `empty`, the same registry on an idle one), torn down after."""
    with boot(docker=docker, boot_timeout=120) as sandbox:
        service_ports = ports_of_services(load)
        for name, code in (("service.py", SERVICE), ("client.py", CLIENT), ("churn.py", CHURN)):
            sandbox.write_file(f"{DIR}/{name}", code)
        registry = f"{DIR}/registry"
        sandbox.run("mkdir", "-p", registry)
        sandbox.write_file(f"{registry}/registry.yaml", registry_text(service_ports))
        unit_files(sandbox, len(service_ports))
        host = BigHost(sandbox, registry, tuple(service_ports), load)
        if not empty:
            start_load(host)
        yield host


def unit_files(sandbox: Sandbox, services: int) -> None:
    """Every registered unit's file on disk, not started, as on a real host: systemd then
    loads each one `audit` asks of, which is what asking it costs there (issue 29). The big
    services' and churns' are replaced by their own when the load starts."""
    names = [f"big-{index:03d}.service" for index in range(services)]
    names += [f"churn-{port}.service" for port in CHURN_PORTS]
    names += [f"fill-{index:03d}.service" for index in range(UNITS - len(names))]
    text = _unit("a registered unit, not running", "/bin/sleep infinity")
    write = 'text=$(cat); for name; do printf "%s\\n" "$text" > "/run/systemd/system/$name"; done'
    sandbox.run("sh", "-c", write, "sh", *names, input=text)
    sandbox.daemon_reload()


def start_load(host: BigHost) -> None:
    """Load HOST with the services, clients and churn (an idle one, built with `empty`, too)."""
    sandbox = host.sandbox
    units = []
    for index, ports in enumerate(host.service_ports):
        name = f"big-{index:03d}.service"
        listened = ",".join(map(str, ports))
        command = f"{PYTHON} {DIR}/service.py {listened} {host.load.fds} {host.load.workers}"
        sandbox.write_unit(name, _unit(f"big service {index}", command))
        units.append(name)
    every_port = ",".join(str(p) for ports in host.service_ports for p in ports)
    for index in range(CLIENTS):
        name = f"clients-{index}.service"
        command = f"{PYTHON} {DIR}/client.py {every_port} {host.load.connections // CLIENTS}"
        sandbox.write_unit(name, _unit("loopback clients", command))
    rate = host.load.time_wait / 60 / len(CHURN_PORTS)
    churns = [f"churn-{port}.service" for port in CHURN_PORTS]
    for port, name in zip(CHURN_PORTS, churns, strict=True):
        command = f"{PYTHON} {DIR}/churn.py {port} {rate:.0f}"
        sandbox.write_unit(name, _unit("TIME-WAIT churn", command))
    sandbox.daemon_reload()
    for start in range(0, len(units), 50):
        sandbox.run("systemctl", "start", *units[start : start + 50], timeout=120)
    listeners = host.load.listeners
    wait_for(lambda: host.counts()["listen"] >= listeners or None, timeout=120,
             what=f"{listeners} listeners")  # fmt: skip
    clients = [f"clients-{i}.service" for i in range(CLIENTS)]
    sandbox.run("systemctl", "start", *churns, *clients, timeout=120)
    established = 2 * host.load.connections
    wait_for(lambda: host.counts()["established"] >= established or None, timeout=300,
             what=f"{established} established sockets")  # fmt: skip
    # TIME-WAIT builds up for its 60 s lifetime, then holds at what the churn's rate gives on
    # this machine: the bench reports the count it reached, not the target.
    deadline = time.monotonic() + 70
    while time.monotonic() < deadline and host.counts()["time-wait"] < host.load.time_wait:
        time.sleep(5)


TIMER = r"""
import json, subprocess, sys, time
spec = json.loads(sys.argv[1])
walls = {label: [] for label in spec["commands"]}
for _ in range(spec["runs"]):
    for label, argv in spec["commands"].items():
        started = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls[label].append((time.perf_counter() - started) * 1000)
        if done.returncode not in spec.get("ok", {}).get(label, [0]):
            sys.exit(f"{label}: exit {done.returncode}")
print(json.dumps(walls))
"""


def timed(
    sandbox: Sandbox,
    commands: dict[str, list[str]],
    runs: int,
    ok: dict[str, list[int]] | None = None,
    timeout: float = 1800,
) -> dict[str, list[float]]:
    """Each command's wall times in ms over RUNS rounds, interleaved, timed inside the sandbox
    (one nsenter for the lot, so its cost is in no figure)."""
    spec = json.dumps({"commands": commands, "runs": runs, "ok": ok or {}})
    out = sandbox.run(PYTHON, "-I", "-c", TIMER, spec, timeout=timeout).stdout
    walls: dict[str, list[float]] = json.loads(out)
    return walls


def portguard(*args: str) -> list[str]:
    """A portguard command line inside the sandbox, running this checkout."""
    from tests.system.guarded import SRC  # noqa: PLC0415

    return ["env", f"PYTHONPATH={SRC}", PYTHON, "-m", "portguard", *args]


SQUATTER = r"""
import socket, sys, time
sock = socket.socket(socket.AF_INET6)
sock.bind(("::", int(sys.argv[1])))
sock.listen()
time.sleep(10**6)
"""


def squat(host: BigHost, port: int) -> None:
    """squatter.service, in no registry, holding PORT (a filler unit's claim)."""
    host.sandbox.write_file(f"{DIR}/squatter.py", SQUATTER)
    command = f"{PYTHON} {DIR}/squatter.py {port}"
    host.sandbox.write_unit("squatter.service", _unit("squatter", command))
    host.sandbox.daemon_reload()
    host.sandbox.run("systemctl", "start", "squatter.service")
    wait_for(lambda: host.sandbox.run("ss", "-Hltn", f"sport = :{port}").stdout.strip() or None,
             timeout=10, what=f"squatter.service on {port}")  # fmt: skip

"""The census's port filter (sockets.bytecode): a program of inet_diag ops the kernel runs
over its socket tables.

Two checks. A model of the kernel's own two functions, ported line by line from
linux/net/ipv4/inet_diag.c (inet_diag_bc_audit, which refuses a malformed program with
EINVAL, and inet_diag_bc_run), run on many port sets: labelled a model, it is not the kernel.
Then the kernel itself: in a network namespace of its own, 300 listeners on random ports and
one dump per protocol must return exactly the ones in the asked ranges.
"""

import json
import os
import random
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import SRC

pytest.importorskip("pyroute2")

from portguard.host.sockets import _RANGES_PER_DUMP, bytecode, port_ranges

NOP, JMP, S_GE, S_LE = 0, 1, 2, 3


def _ops(program: bytes, offset: int) -> tuple[int, int, int]:
    return struct.unpack_from("=BBH", program, offset)


def kernel_audit(program: bytes) -> bool:
    """inet_diag_bc_audit, for the ops we use: True where the kernel accepts the program."""

    def valid_cc(length: int, cc: int) -> bool:
        offset = 0
        while length >= 0:
            if cc > length:
                return False
            if cc == length:
                return True
            yes = _ops(program, offset)[1]
            if yes < 4 or yes & 3:
                return False
            length -= yes
            offset += yes
        return False

    offset, length = 0, len(program)
    while length > 0:
        code, yes, no = _ops(program, offset)
        min_len = 4
        if code in (S_GE, S_LE):
            min_len += 4
            if length < min_len:
                return False
        elif code not in (NOP, JMP):
            return False
        if code != NOP:
            if no < min_len or no > length + 4 or no & 3:
                return False
            if no < length and not valid_cc(len(program), length - no):
                return False
        if yes < min_len or yes > length + 4 or yes & 3:
            return False
        offset += yes
        length -= yes
    return length == 0


def kernel_run(program: bytes, sport: int) -> bool:
    """inet_diag_bc_run for a socket whose local port is SPORT: True when it is dumped."""
    offset, length = 0, len(program)
    while length > 0:
        code, yes_jump, no_jump = _ops(program, offset)
        holds = True
        if code == JMP:
            holds = False
        elif code == S_GE:
            holds = sport >= _ops(program, offset + 4)[2]
        elif code == S_LE:
            holds = sport <= _ops(program, offset + 4)[2]
        jump = yes_jump if holds else no_jump
        offset += jump
        length -= jump
    return length == 0


def test_ports_become_the_fewest_ranges() -> None:
    assert port_ranges([5, 3, 4, 9, 1, 10, 3]) == [(1, 1), (3, 5), (9, 10)]
    assert port_ranges(range(10000, 60001)) == [(10000, 60000)]
    assert port_ranges([]) == []


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(1, 65535), min_size=1, max_size=400), st.integers(1, 65535))
def test_the_program_passes_the_kernels_audit_and_accepts_exactly_the_ports(
    ports: set[int], probe: int
) -> None:
    program = bytecode(port_ranges(ports))
    assert kernel_audit(program)
    for sport in {probe, min(ports), max(ports), min(ports) - 1, max(ports) + 1} - {0, 65536}:
        assert kernel_run(program, sport) == (sport in ports), sport


def test_the_longest_program_one_dump_carries_still_passes_the_audit() -> None:
    spans = [(port, port) for port in range(1, 2 * _RANGES_PER_DUMP, 2)]
    program = bytecode(spans)
    assert len(program) <= 65535
    assert kernel_audit(program)
    assert kernel_run(program, 2 * _RANGES_PER_DUMP - 1) and not kernel_run(program, 2)


def test_the_model_would_catch_a_program_the_kernel_refuses() -> None:
    good = bytecode([(80, 80)])
    assert not kernel_audit(good[:-4])  # cut short: the yes chain overshoots the end
    assert not kernel_audit(b"\x09" + good[1:])  # an op the audit does not know
    bad_jump = struct.pack("=BBH", S_GE, 8, 6) + good[4:]  # `no` not a multiple of 4
    assert not kernel_audit(bad_jump)


KERNEL = """
import json, random, socket, sys
from portguard.registry.claims import Proto
from portguard.host.sockets import _ALL_STATES, _RANGES_PER_DUMP, _Diag, _dump, bytecode, census
from portguard.host.sockets import port_ranges
rng = random.Random(int(sys.argv[1]))
ports = rng.sample(range(1024, 65536), 300)
made = []
for index, port in enumerate(ports):
    proto = (socket.SOCK_STREAM, socket.SOCK_DGRAM)[index % 2]
    family = (socket.AF_INET, socket.AF_INET6)[index % 3 == 0]
    sock = socket.socket(family, proto)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    if proto == socket.SOCK_STREAM:
        sock.listen()
    made.append(sock)
asked = {(Proto.TCP, p) for p in rng.sample(range(1024, 65536), 20000)}
asked |= {(Proto.TCP, p) for p in ports[:40]} | {(Proto.UDP, p) for p in ports[40:80]}
# What the kernel's filter alone lets through (census also checks each port in Python).
raw = []
with _Diag() as diag:
    diag.bind()
    for proto in (Proto.TCP, Proto.UDP):
        spans = port_ranges(p for q, p in asked if q is proto)
        for start in range(0, len(spans), _RANGES_PER_DUMP):
            program = bytecode(spans[start : start + _RANGES_PER_DUMP])
            for family in (socket.AF_INET, socket.AF_INET6):
                raw += _dump(diag, family, proto, states=_ALL_STATES, program=program)
print(json.dumps({"made": [[("tcp", "udp")[i % 2], p] for i, p in enumerate(ports)],
                  "asked": sorted([str(proto), p] for proto, p in asked),
                  "raw": sorted([row[0], row[3]] for row in raw),
                  "found": sorted([str(o.proto), o.port] for o in census(asked))}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root "
                    "(CI runs as root)")  # fmt: skip
def test_the_kernel_dumps_exactly_the_asked_ports() -> None:
    seed = random.randrange(1 << 30)
    result = subprocess.run(
        # `unshare --net` leaves lo down, and ::1 cannot be bound until it is up.
        ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
         sys.executable, "-c", KERNEL, str(seed)],
        env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    asked = {tuple(a) for a in seen["asked"]}
    expected = sorted(list(m) for m in seen["made"] if tuple(m) in asked)
    assert len(expected) >= 40, f"seed {seed}"
    assert seen["raw"] == expected, f"seed {seed}: the kernel's filter"
    assert seen["found"] == expected, f"seed {seed}"


HOLDERS = """
import json, socket
from portguard.registry.claims import Proto
from portguard.host.sockets import census, holders_census
def listener(port=0):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock
server = listener()
a = server.getsockname()[1]
accepted = []
for _ in range(3):
    client = socket.create_connection(("127.0.0.1", a))
    accepted.append((client, server.accept()[0]))
tw_server = listener()
b = tw_server.getsockname()[1]
c1 = socket.create_connection(("127.0.0.1", b))
s1 = tw_server.accept()[0]
s1.close(); c1.recv(1); c1.close(); tw_server.close()  # the server side: TIME-WAIT on b
squatter = socket.socket()
squatter.bind(("127.0.0.1", 0))  # a client connection that took port c
c = squatter.getsockname()[1]
squatter.connect(("127.0.0.1", a))
accepted.append((squatter, server.accept()[0]))
ports = {(Proto.TCP, p) for p in (a, b, c)}
def seen(found):
    return sorted([o.port, o.state] for o in found)
print(json.dumps({"a": a, "b": b, "c": c, "full": seen(census(ports)),
                  "holders": seen(holders_census(ports))}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root "
                    "(CI runs as root)")  # fmt: skip
def test_audits_census_keeps_the_holders_and_drops_accepted_connections_and_time_wait() -> None:
    result = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
         sys.executable, "-c", HOLDERS],
        env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    a, b, c = seen["a"], seen["b"], seen["c"]
    # The full census (check's, why's): the listener, its 4 accepted connections, the
    # TIME-WAIT, and the client connection on c.
    assert [a, "LISTEN"] in seen["full"] and [b, "TIME-WAIT"] in seen["full"]
    assert seen["full"].count([a, "ESTAB"]) == 4 and [c, "ESTAB"] in seen["full"]
    # audit's: who holds each port — the listener of a, and the connection that took c.
    assert seen["holders"] == sorted([[a, "LISTEN"], [c, "ESTAB"]])

"""The early census (prefetch.py): a child's reading of the socket table, taken once; and
the facts child begun beside it.

Against the real kernel: sockets of this process, on ports the kernel picks; the child's
answer must be exactly what sockets.census says in the parent.
"""

import os
import socket
from collections.abc import Iterator

import pytest

from portguard.host import prefetch
from portguard.host.sockets import census, listening_census
from portguard.registry.claims import Proto


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    """A TCP listener with one connection, and a bound UDP socket."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        with socket.create_connection(tcp.getsockname()):
            accepted, _ = tcp.accept()
            with accepted:
                yield tcp.getsockname()[1], udp.getsockname()[1]


def test_the_childs_census_is_the_kernels(ports: tuple[int, int]) -> None:
    tcp, udp = ports
    asked = [(Proto.TCP, tcp), (Proto.UDP, udp)]
    with prefetch.Early([("tcp", tcp), ("udp", udp)]) as child:
        early = child.census(asked, timeout=10)
    assert early is not None
    assert sorted(early, key=str) == sorted(census(asked), key=str)
    assert {o.state for o in early if o.port == tcp} == {"LISTEN", "ESTAB"}
    assert early[0].cgroup_id  # every field made the trip, the cgroup id too


def test_a_subset_of_its_ports_is_taken_and_filtered(ports: tuple[int, int]) -> None:
    tcp, udp = ports
    with prefetch.Early([("tcp", tcp), ("udp", udp)]) as child:
        early = child.census([(Proto.UDP, udp)], timeout=10)
    assert early is not None and {(o.proto, o.port) for o in early} == {(Proto.UDP, udp)}


def test_other_ports_or_a_second_take_read_the_table_yourself(ports: tuple[int, int]) -> None:
    tcp, udp = ports
    with prefetch.Early([("tcp", tcp)]) as child:
        assert child.census([(Proto.UDP, udp)], timeout=10) is None
    with prefetch.Early([("tcp", tcp)]) as child:
        assert child.census([(Proto.TCP, tcp)], timeout=10) is not None
        assert child.census([(Proto.TCP, tcp)], timeout=10) is None


def test_children_never_asked_are_ended() -> None:
    early = prefetch.Early([("tcp", 9)])
    pids = [early._pid, early.facts._pid]
    assert None not in pids
    early.close()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_the_census_child_loads_no_dataclasses() -> None:
    """Issue 29: what the child imports to answer (sockets.rows) is pyroute2's netlink core
    and no model of ours: its answer is on a held check's critical path."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.conftest import SRC  # noqa: PLC0415

    script = (f"import sys; sys.path.insert(0, {str(SRC)!r}); from portguard.host import "
              "sockets; print(' '.join(sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    modules = set(done.stdout.split())
    assert "pyroute2.netlink.diag" in modules
    for heavy in ("dataclasses", "ipaddress", "portguard.host.occupants",
                  "portguard.registry.claims"):  # fmt: skip
        assert heavy not in modules, heavy


def test_a_listening_census_reads_the_listeners_alone(ports: tuple[int, int]) -> None:
    """What a held check looks at first (issue 29): the TCP listener, not its connection;
    every UDP socket on the port."""
    tcp, udp = ports
    asked = [(Proto.TCP, tcp), (Proto.UDP, udp)]
    with prefetch.Early([("tcp", tcp), ("udp", udp)], listening=True) as child:
        early = child.census(asked, timeout=10)
    assert early is not None
    assert {o.state for o in early if o.port == tcp} == {"LISTEN"}
    assert {o.state for o in early if o.port == udp} == {"UNCONN"}
    assert sorted(early, key=str) == sorted(listening_census(asked), key=str)

"""What /proc tells of a few known PIDs (processes.py): a fake /proc tree, then the real one."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portguard.host.processes import (
    SocketOptions,
    options_of,
    process,
    socket_holders,
    wait_for_exit,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
BTIME = 1_700_000_000
# A real /proc/PID/stat line after "(comm)", starttime (the 20th field after it) left open.
# The neighbours of starttime are distinct numbers, so reading the wrong field shows.
STAT_AFTER_COMM = (
    "S 77 4242 4242 0 -1 4194560 98 0 0 0 3 1 0 0 20 0 1 0 {starttime} 3133440 380 "
    "18446744073709551615 94645175664640 94645175684521 140732261244160 0 0 0 0 0 0 0 0 0 "
    "17 0 0 0 0 0 0 94645175700528 94645175702144 94645760229376 140732261251615 "
    "140732261251635 140732261251635 140732261253099 0"
)


def fake_process(
    proc: Path, pid: int, *, comm: str, cmdline: bytes, started_after_boot: float
) -> None:
    """PID's stat, status, comm and cmdline under PROC, as the kernel writes them."""
    directory = proc / str(pid)
    directory.mkdir(parents=True)
    starttime = round(started_after_boot * CLK_TCK)
    (directory / "stat").write_text(f"{pid} ({comm}) {STAT_AFTER_COMM.format(starttime=starttime)}")
    (directory / "comm").write_text(f"{comm}\n")
    (directory / "cmdline").write_bytes(cmdline)
    (directory / "status").write_text(
        f"Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t{pid}\nPPid:\t77\n"
        "Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t100\t100\t100\n"
    )


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "stat").write_text(
        "cpu  1 2 3 4 5 6 7 0 0 0\nintr 12345\nctxt 678\n"
        f"btime {BTIME}\nprocesses 9000\nprocs_running 1\n"
    )
    return tmp_path


def test_process_from_a_fake_proc(proc: Path) -> None:
    # comm may hold spaces and ')': the fields after it are found after the last ')'.
    fake_process(
        proc,
        4242,
        comm="x) (y z)",
        cmdline=b"/usr/bin/y\0--name\0two words\0",
        started_after_boot=250.5,
    )
    found = process(4242, proc=str(proc))
    assert found is not None
    assert found.pid == 4242
    assert found.comm == "x) (y z)"
    assert found.cmdline == ("/usr/bin/y", "--name", "two words")
    assert found.uid == 1000  # the real uid, the first of the four
    assert found.ppid == 77
    assert found.started == pytest.approx(BTIME + 250.5, abs=1 / CLK_TCK)


def test_kernel_thread_has_no_cmdline(proc: Path) -> None:
    fake_process(proc, 9, comm="kworker/0:1", cmdline=b"", started_after_boot=0.5)
    found = process(9, proc=str(proc))
    assert found is not None
    assert found.cmdline == ()
    assert found.comm == "kworker/0:1"


def test_missing_pid_is_none(proc: Path) -> None:
    fake_process(proc, 4242, comm="a", cmdline=b"a\0", started_after_boot=1)
    assert process(4243, proc=str(proc)) is None


def test_without_btime_the_start_is_unknown(proc: Path) -> None:
    (proc / "stat").write_text("cpu  1 2 3 4\n")
    fake_process(proc, 4242, comm="a", cmdline=b"a\0", started_after_boot=1)
    found = process(4242, proc=str(proc))
    assert found is not None and found.started is None and found.ppid == 77


def test_this_process_in_the_real_proc() -> None:
    found = process(os.getpid())
    assert found is not None
    assert found.ppid == os.getppid()
    assert found.uid == os.getuid()
    assert found.started is not None and found.started <= time.time() + 2
    # pytest's own arguments are the tail of the command line (`python -m pytest ARGS`).
    args = tuple(sys.argv[1:])
    assert found.cmdline[len(found.cmdline) - len(args) :] == args


SLEEP = "import time; print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def sleeper() -> Iterator["subprocess.Popen[bytes]"]:
    child = subprocess.Popen(
        [sys.executable, "-c", SLEEP, "two words"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    # Only once it has said so has the child exec'd: before that (Python 3.13's vfork) /proc
    # shows an empty command line.
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()
    child.stdout.close()


def test_a_child_in_the_real_proc(sleeper: "subprocess.Popen[bytes]") -> None:
    spawned = time.time()
    found = process(sleeper.pid)
    assert found is not None
    assert found.cmdline == (sys.executable, "-c", SLEEP, "two words")
    assert found.comm == os.path.basename(sys.executable)[:15]
    assert found.ppid == os.getpid()
    # btime is whole seconds, so the start is known to about a second.
    assert found.started is not None and abs(found.started - spawned) < 2


def test_socket_holders_finds_who_has_each_socket_open(sleeper: "subprocess.Popen[bytes]") -> None:
    with socket.socket() as sock, socket.socket() as own:
        inode, mine = os.fstat(sock.fileno()).st_ino, os.fstat(own.fileno()).st_ino
        holder = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[sock.fileno()]
        )
        try:
            candidates = [sleeper.pid, os.getpid(), holder.pid, 2**22 + 1]  # the last: no process
            held = socket_holders(candidates)
            assert held[inode] == [(os.getpid(), sock.fileno()), (holder.pid, sock.fileno())]
            assert held[mine] == [(os.getpid(), own.fileno())]
            # Asked for one inode, the pass stops at the first process that has it.
            assert socket_holders(candidates, {inode})[inode] == [(os.getpid(), sock.fileno())]
        finally:
            holder.kill()
            holder.wait()
        assert socket_holders(candidates)[inode] == [(os.getpid(), sock.fileno())]
    assert inode not in socket_holders([os.getpid()])


def test_wait_for_exit_returns_when_a_process_exits(sleeper: "subprocess.Popen[bytes]") -> None:
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    began = time.monotonic()
    wait_for_exit([sleeper.pid, quick.pid], 30.0)
    assert time.monotonic() - began < 10
    assert quick.wait(timeout=5) == 0
    assert sleeper.poll() is None


def test_wait_for_exit_gives_up_after_the_timeout(sleeper: "subprocess.Popen[bytes]") -> None:
    began = time.monotonic()
    wait_for_exit([sleeper.pid], 0.3)
    assert 0.25 <= time.monotonic() - began < 5
    assert sleeper.poll() is None


def test_wait_for_exit_of_a_gone_process_returns_at_once() -> None:
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    began = time.monotonic()
    wait_for_exit([gone.pid], 30.0)
    assert time.monotonic() - began < 1


def test_a_holders_socket_options_are_read_from_a_copy_of_its_descriptor() -> None:
    """What sock_diag does not show -- SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY of a
    connection -- read from another process's socket, which keeps it open and unchanged."""
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET6)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
        "s.bind(('::1', 0))\n"
        "print(s.fileno(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None
        fd = int(child.stdout.readline())
        inode = os.stat(f"/proc/{child.pid}/fd/{fd}").st_ino
        found = options_of(inode, child.pid)
        assert found == SocketOptions(reuseaddr=True, reuseport=False, v6only=True)
        assert options_of(inode + 1_000_000, child.pid) is None  # not a socket it holds
        assert os.readlink(f"/proc/{child.pid}/fd/{fd}") == f"socket:[{inode}]"  # still open
    finally:
        child.kill()
        child.wait(timeout=10)
    assert options_of(inode, child.pid) is None  # gone

"""`portguard wait` in a real systemd against the real kernel: woken by the holder's exit,
by a socket's destruction, by the last TIME-WAIT timer; named at the timeout; `--listening`
for a service that binds late, and a squatter refused; bad arguments.
"""

from __future__ import annotations

import json
import shlex

from tests.system.guarded import (
    PYTHON,
    SRC,
    listener,
    make_time_wait,
    plain_unit,
    portguard,
    wait_listening,
    write_registry,
)
from tests.system.sandbox import Sandbox

# A holder of PORT for HOLD seconds; then it exits ("exit") or closes the socket and lives
# on ("close"), printing the monotonic time just before it lets go.
HOLDER = """
import socket, sys, time
port, hold, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen()
print("ready", flush=True)
time.sleep(hold)
print(time.monotonic(), flush=True)
if mode == "close":
    s.close()
    time.sleep(30)
"""
# Starts the holder, then `portguard wait PORT --json`, and says when each let go/returned.
DRIVER = """
import json, subprocess, sys, time
holder_code, port, hold, mode = sys.argv[1:5]
holder = subprocess.Popen([sys.executable, "-c", holder_code, port, hold, mode],
                          stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == "ready"
done = subprocess.run([sys.executable, "-m", "portguard", "wait", port, "--json",
                       "--timeout", "10s"], capture_output=True, text=True)
returned = time.monotonic()
released = float(holder.stdout.readline())
holder.kill()
holder.wait()
print(json.dumps({"code": done.returncode, "out": done.stdout, "err": done.stderr,
                  "released": released, "returned": returned}))
"""


def released_and_waited(sandbox: Sandbox, port: int, mode: str) -> tuple[dict[str, object], float]:
    """`wait`'s JSON and how long after the holder let go it returned (seconds)."""
    ran = sandbox.run(PYTHON, "-c", DRIVER, HOLDER, str(port), "1.5", mode,
                      env={"PYTHONPATH": SRC}, timeout=60)  # fmt: skip
    result = json.loads(ran.stdout)
    assert result["code"] == 0, result
    after = float(result["returned"]) - float(result["released"])
    return json.loads(str(result["out"])), after


def test_returns_right_after_the_holder_exits(sandbox: Sandbox) -> None:
    data, after = released_and_waited(sandbox, 18401, "exit")
    assert 0 <= after <= 0.5, after  # a 1-second poll would be up to 1 s late
    # The exit closes the socket first: its destroy notification (root) may beat the pidfd.
    assert data["woke_by"] in ("exit", "destroy"), data
    # It really waited: the holder held on for 1.5 s after `wait` was started, less the
    # interpreter's start (under 1 s even on a loaded machine).
    assert data["waited_ms"] >= 500, data


def test_returns_right_after_a_living_process_closes_the_socket(sandbox: Sandbox) -> None:
    data, after = released_and_waited(sandbox, 18402, "close")
    assert 0 <= after <= 0.5, after
    assert data["woke_by"] == "destroy", data  # sock_diag's notification, as root


def test_a_holder_that_stays_is_named_at_the_timeout(sandbox: Sandbox) -> None:
    plain_unit(sandbox, "hold.service", f"[Service]\nExecStart={listener('0.0.0.0', 18403)}\n")
    sandbox.daemon_reload()
    assert sandbox.start("hold.service").active
    wait_listening(sandbox, 18403)
    done = portguard(sandbox, "wait", "18403", "--timeout", "1s")
    assert done.returncode == 75, done
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("portguard: 0.0.0.0:18403/tcp is still in use after 1"), line
    assert "held by hold.service (pid " in line and "systemctl stop hold.service" in line, line


def test_time_wait_without_reuseaddr_is_waited_out_to_its_timer(sandbox: Sandbox) -> None:
    make_time_wait(sandbox, 18404)
    free = portguard(sandbox, "wait", "18404", "--json")  # SO_REUSEADDR: TIME-WAIT is no bar
    assert free.returncode == 0 and json.loads(free.stdout)["waited_ms"] < 500, free
    done = portguard(sandbox, "wait", "18404", "--no-reuseaddr", "--timeout", "75s", "--json",
                     timeout=100)  # fmt: skip
    assert done.returncode == 0, done
    data = json.loads(done.stdout)
    assert data["woke_by"] == "timer", data
    # One sleep to the timer's time, then a few short ones while the kernel's timer wheel
    # catches up (it batches long timers); a 50 ms poll all along would be 1,200.
    assert set(data["wakes"]) == {"timer"} and data["wakes"]["timer"] <= 40, data
    assert 40_000 <= data["waited_ms"] <= 65_000, data  # the kernel's 60 s, less the setup


def test_listening_returns_when_the_unit_binds(sandbox: Sandbox) -> None:
    write_registry(sandbox, "version: 1\nunits:\n  late.service:\n    listen: [18405/tcp]\n")
    code = ("import socket, time; time.sleep(1); s = socket.socket(); "
            "s.bind(('0.0.0.0', 18405)); s.listen(); time.sleep(10**6)")  # fmt: skip
    plain_unit(sandbox, "late.service", f"[Service]\nExecStart={PYTHON} -c {shlex.quote(code)}\n")
    sandbox.daemon_reload()
    assert sandbox.start("late.service").active
    done = portguard(sandbox, "wait", "--listening", "--unit", "late.service", "--json")
    assert done.returncode == 0, done
    data = json.loads(done.stdout)
    assert 500 <= data["waited_ms"] <= 5000, data
    assert [h["unit"] for h in data["holders"]] == ["late.service"], data


def test_listening_refuses_a_squatter(sandbox: Sandbox) -> None:
    write_registry(sandbox, "version: 1\nunits:\n  api.service:\n    listen: [18406/tcp]\n")
    plain_unit(sandbox, "squat.service", f"[Service]\nExecStart={listener('0.0.0.0', 18406)}\n")
    sandbox.daemon_reload()
    assert sandbox.start("squat.service").active
    wait_listening(sandbox, 18406)
    done = portguard(sandbox, "wait", "--listening", "--unit", "api.service", "--timeout", "5s")
    assert done.returncode == 69, done
    assert "squat.service" in done.stderr and "not api.service" in done.stderr, done.stderr
    nothing = portguard(sandbox, "wait", "--listening", "18407", "--timeout", "300ms")
    assert nothing.returncode == 75, nothing
    assert nothing.stderr.startswith("portguard: nothing listens on 18407/tcp after "), nothing


def test_bad_arguments_are_one_line_and_64(sandbox: Sandbox) -> None:
    for argv, message in (
        (["70000"], "'70000': port 70000 is out of range"),
        (["8080", "--timeout", "5 parsecs"], "--timeout: unknown time unit 'parsecs'"),
        ([], "give at least one PORT[/PROTO], or --unit NAME"),
        (["8080", "--address", "nowhere"], "--address 'nowhere' is not an IPv4 or IPv6"),
        (["127.0.0.1:8080"], "give the address with --address"),
    ):
        done = portguard(sandbox, "wait", *argv)
        assert done.returncode == 64, (argv, done)
        assert len(done.stderr.splitlines()) == 1 and message in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr


def test_an_address_not_on_this_host_ends_it_at_once(sandbox: Sandbox) -> None:
    done = portguard(sandbox, "wait", "8080", "--address", "192.0.2.1", "--timeout", "20s")
    assert done.returncode == 68, done
    assert done.stderr == (
        "portguard: 192.0.2.1:8080/tcp: the address is not on this host (EADDRNOTAVAIL); "
        "waiting cannot change that\n"
    )

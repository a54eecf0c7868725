"""Part of bench/bench.py: how soon `portguard wait` returns after a port's holder lets go,
next to the deploy scripts' seed loop it replaces (`ss` once a second, up to 30 times).

Each run starts a holder that listens on a fresh port and exits 0.5-1.5 s later (so the
release falls anywhere in the seed loop's second), having written the monotonic time just
before its exit; the waiter (started right after the holder is listening) returns, and the
latency is its return time less the holder's. The two kinds of waiter alternate. Stdlib
only; the portguard of this checkout, as root.
"""

import os
import random
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
PYTHON = "/usr/bin/python3"
HOLDER = """
import os, socket, sys, time
port, delay, fd = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen()
os.write(fd, b"ready\\n")
time.sleep(delay)
os.write(fd, f"{time.monotonic()}\\n".encode())
"""
SEED_LOOP = (
    "for i in $(seq 1 30); do ss -tlnH 'sport = :{port}' | grep -q . || break; sleep 1; done"
)


def wait_latency(runs: int, first_port: int = 47000) -> tuple[list[str], list[str]]:
    """Rows of release-to-return latency for `portguard wait` and the seed loop."""
    waiters = {
        "`portguard wait PORT`": [PYTHON, "-m", "portguard", "wait", "{port}", "--json"],
        "seed loop (`ss` every second)": ["bash", "-c", SEED_LOOP],
    }
    latencies: dict[str, list[float]] = {name: [] for name in waiters}
    wakes: dict[str, int] = {}
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    port = first_port
    for _ in range(runs):
        for name, argv in waiters.items():
            port += 1
            command = [word.replace("{port}", str(port)) for word in argv]
            released, returned, out = _one(command, port, env)
            latencies[name].append((returned - released) * 1000)
            if out.startswith("{"):
                import json  # noqa: PLC0415

                woke = str(json.loads(out)["woke_by"])
                wakes[woke] = wakes.get(woke, 0) + 1
    rows = [
        "| release → return (holder exits) | runs | median ms | max ms | min ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in latencies.items():
        rows.append(f"| {name} | {len(values)} | {statistics.median(values):.1f} | "
                    f"{max(values):.1f} | {min(values):.1f} |")  # fmt: skip
    notes = ["`portguard wait` was woken by: "
             + ", ".join(f"{kind} {count}" for kind, count in sorted(wakes.items()))]  # fmt: skip
    return rows, notes


def _one(argv: list[str], port: int, env: dict[str, str]) -> tuple[float, float, str]:
    read_end, write_end = os.pipe()
    holder = subprocess.Popen(
        [PYTHON, "-I", "-c", HOLDER, str(port), f"{random.uniform(0.5, 1.5)}", str(write_end)],
        pass_fds=[write_end],
    )
    os.close(write_end)
    try:
        if read_line(read_end) != "ready":
            raise SystemExit("bench: the holder did not start")
        waiter = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        out, _ = waiter.communicate(timeout=40)
        returned = time.monotonic()
        if waiter.returncode != 0:
            raise SystemExit(f"bench: {argv[:4]} exited {waiter.returncode}")
        released = float(read_line(read_end))
    finally:
        os.close(read_end)
        holder.wait()
    return released, returned, out


def read_line(fd: int, timeout: float = 10.0) -> str:
    """One line from FD, read a byte at a time so nothing after it is taken; '' at the
    timeout or the end."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 1) if ready else b""
        if not chunk:
            break
        got += chunk
    return got.decode().strip()


if __name__ == "__main__":
    table, remarks = wait_latency(int(sys.argv[1]) if len(sys.argv) > 1 else 25)
    print("\n".join(table))
    print("\n".join(f"- {note}" for note in remarks))

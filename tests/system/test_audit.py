"""`portguard audit` in a real systemd against the real kernel: a claim in each status,
the three formats agreeing, --unregistered, and the drift fixed."""

from __future__ import annotations

import json
import subprocess

from tests.prometheus_text import parse
from tests.system.guarded import PYTHON, SRC, listener, plain_unit, wait_listening, write_registry
from tests.system.sandbox import Sandbox

SLEEPER = "/bin/sleep infinity"
REGISTRY = """\
version: 1
units:
  ok.service:
    listen: [18081/tcp]
    owner: web-team
  squatted.service:
    listen: ["127.0.0.1:18082/tcp"]
  missing.service:
    listen: [18083/tcp]
  idle.service:
    listen: [18084/tcp]
  web.service:
    listen: [18085/tcp]
    via: [web.socket]
  redis@.service:
    listen: ["%i/tcp"]
  dns.service:
    listen: [18088/udp]
"""
# The registry order of the claims above, with the template's one running instance.
CLAIMS = {
    "ok.service": "18081/tcp",
    "squatted.service": "127.0.0.1:18082/tcp",
    "missing.service": "18083/tcp",
    "idle.service": "18084/tcp",
    "web.service": "18085/tcp",
    "redis@18086.service": "18086/tcp",
    "dns.service": "18088/udp",
}


def audit(
    sandbox: Sandbox, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return sandbox.run(
        PYTHON, "-m", "portguard", "audit", "--registry", "/etc/portguard", *args,
        env={"PYTHONPATH": SRC, **(env or {})}, check=False,
    )  # fmt: skip


def table(stdout: str) -> dict[str, tuple[str, str, str]]:
    """The text table's rows: unit (or claim, for unregistered ones) -> (status, claim, holder)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["STATUS", "UNIT", "CLAIM", "HOLDER"], stdout
    rows = {}
    for line in lines[1:-1]:
        status, unit, claim, holder = line.split(None, 3)
        rows[claim if unit == "-" else unit] = (status, claim, holder)
    return rows


def main_pid(sandbox: Sandbox, unit: str) -> int:
    return int(sandbox.unit_properties(unit, "MainPID")["MainPID"])


def set_up(sandbox: Sandbox) -> None:
    """One claim in each status, a `via` socket unit, a template instance, UDP, a stray."""
    write_registry(sandbox, REGISTRY)
    plain_unit(sandbox, "ok.service", f"[Service]\nExecStart={listener('0.0.0.0', 18081)}\n")
    plain_unit(sandbox, "squatted.service", f"[Service]\nExecStart={SLEEPER}\n")
    squat = listener("127.0.0.1", 18082)
    plain_unit(sandbox, "squatter.service", f"[Service]\nExecStart={squat}\n")
    plain_unit(sandbox, "missing.service", f"[Service]\nExecStart={SLEEPER}\n")
    plain_unit(sandbox, "idle.service", f"[Service]\nExecStart={SLEEPER}\n")
    plain_unit(sandbox, "web.socket", "[Socket]\nListenStream=18085\n")
    plain_unit(sandbox, "web.service", f"[Service]\nExecStart={SLEEPER}\n")
    # systemd puts the instance in for %i: redis@18086.service listens on 18086.
    redis = listener("0.0.0.0", "%i")  # type: ignore[arg-type]
    plain_unit(sandbox, "redis@.service", f"[Service]\nExecStart={redis}\n")
    udp = listener("0.0.0.0", 18088, proto="udp")
    plain_unit(sandbox, "dns.service", f"[Service]\nExecStart={udp}\n")
    plain_unit(sandbox, "stray.service", f"[Service]\nExecStart={listener('0.0.0.0', 18090)}\n")
    sandbox.daemon_reload()
    for unit in ("ok.service", "squatter.service", "missing.service", "web.socket",
                 "redis@18086.service", "dns.service", "stray.service"):  # fmt: skip
        assert sandbox.start(unit).active, unit
    for port in (18081, 18082, 18085, 18086, 18090):
        wait_listening(sandbox, port)
    wait_listening(sandbox, 18088, "udp")


def test_four_statuses_three_formats_and_the_fix(sandbox: Sandbox) -> None:
    set_up(sandbox)
    squatter = main_pid(sandbox, "squatter.service")

    text = audit(sandbox)
    assert text.returncode == 1, text
    assert text.stderr == ""  # nothing unknown: no gap line
    rows = table(text.stdout)
    assert rows == {
        "squatted.service": ("squatted", CLAIMS["squatted.service"],
                             f"squatter.service (pid {squatter} python3)"),
        "missing.service": ("missing", CLAIMS["missing.service"], "-"),
        "ok.service": ("ok", CLAIMS["ok.service"],
                       f"ok.service (pid {main_pid(sandbox, 'ok.service')} python3)"),
        "web.service": ("ok", CLAIMS["web.service"],
                        "socket unit web.socket (held by PID 1, which starts web.service)"),
        "redis@18086.service": ("ok", CLAIMS["redis@18086.service"],
                                f"redis@18086.service (pid "
                                f"{main_pid(sandbox, 'redis@18086.service')} python3)"),
        "dns.service": ("ok", CLAIMS["dns.service"],
                        f"dns.service (pid {main_pid(sandbox, 'dns.service')} python3)"),
        "idle.service": ("idle", CLAIMS["idle.service"], "-"),
    }  # fmt: skip
    # Most important first, registry order within a status.
    assert [line.split()[1] for line in text.stdout.splitlines()[1:-1]] == [
        "squatted.service", "missing.service", "ok.service", "web.service",
        "redis@18086.service", "dns.service", "idle.service",
    ]  # fmt: skip
    summary = "7 claims: 4 ok, 1 squatted, 1 missing, 1 idle, 0 redirected, 0 exhausted"
    assert text.stdout.splitlines()[-1] == summary

    as_json = audit(sandbox, "--format", "json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert {c["unit"]: (c["status"], c["claim"]) for c in data["claims"]} == {
        unit: (status, claim) for unit, (status, claim, _) in rows.items()
    }
    squatted = data["claims"][0]
    assert squatted["unit"] == "squatted.service"
    assert (squatted["port"], squatted["address"], squatted["proto"]) == (18082, "127.0.0.1", "tcp")
    assert [
        (h["kind"], h["unit"], h["pid"], h["comm"], h["user"]) for h in squatted["holders"]
    ] == [("service", "squatter.service", squatter, "python3", "root")]
    assert data["summary"] == {
        "claims": 7, "ok": 4, "squatted": 1, "missing": 1, "idle": 1, "redirected": 0,
        "exhausted": 0,
    }  # fmt: skip
    assert data["gaps"] == []
    assert data["unregistered"] is None

    metrics = audit(sandbox, "--format", "prometheus")
    assert metrics.returncode == 1
    assert metrics.stderr == ""
    families = parse(metrics.stdout)
    series = families["portguard_claim"].samples
    assert len(series) == len(CLAIMS)
    assert {s.labels["unit"]: s.labels["status"] for s in series} == {
        unit: status for unit, (status, _, _) in rows.items()
    }
    families["portguard_claim"].series(
        "portguard_claim", unit="squatted.service", port="18082", proto="tcp",
        address="127.0.0.1", team="", status="squatted", holder="squatter.service",
    )  # fmt: skip
    families["portguard_claim"].series(
        "portguard_claim", unit="ok.service", port="18081", proto="tcp", address="*",
        team="web-team", status="ok", holder="",
    )  # fmt: skip
    counts = {s.labels["status"]: s.value for s in families["portguard_claims"].samples}
    assert counts == {"ok": 4, "squatted": 1, "missing": 1, "idle": 1, "redirected": 0,
                      "exhausted": 0}  # fmt: skip
    assert families["portguard_audit_gaps"].samples[0].value == 0

    strays = audit(sandbox, "--unregistered")
    assert strays.returncode == 1
    stray_rows = {k: v for k, v in table(strays.stdout).items() if v[0] == "unregistered"}
    assert stray_rows == {
        "0.0.0.0:18090/tcp": ("unregistered", "0.0.0.0:18090/tcp",
                              f"stray.service (pid {main_pid(sandbox, 'stray.service')} python3)")
    }  # fmt: skip
    assert strays.stdout.splitlines()[-1].endswith("; 1 unregistered listener")
    stray_metrics = parse(audit(sandbox, "--unregistered", "--format", "prometheus").stdout)
    assert [s.labels for s in stray_metrics["portguard_unregistered_listener"].samples] == [
        {"port": "18090", "proto": "tcp", "address": "0.0.0.0", "holder": "stray.service"}
    ]

    # The clean fix: the squatter goes, the unit that should listen but does not is stopped.
    sandbox.stop("squatter.service")
    sandbox.stop("missing.service")
    fixed = audit(sandbox)
    assert fixed.returncode == 0, fixed
    assert {unit: row[0] for unit, row in table(fixed.stdout).items()} == {
        "ok.service": "ok", "web.service": "ok", "redis@18086.service": "ok",
        "dns.service": "ok", "squatted.service": "idle", "missing.service": "idle",
        "idle.service": "idle",
    }  # fmt: skip


def test_without_systemd_facts_a_free_port_is_idle_and_the_gap_is_said_once(
    sandbox: Sandbox,
) -> None:
    set_up(sandbox)
    silent = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/nobody-listens-here"}

    text = audit(sandbox, env=silent)

    gap_lines = text.stderr.splitlines()
    assert len(gap_lines) == 1, text.stderr
    assert gap_lines[0].startswith("portguard: not found out: D-Bus: ")
    assert "unit states, template instances and owners' details are unknown" in gap_lines[0]
    rows = table(text.stdout)
    # The squatter is still named (its cgroup says which unit), so the drift is still seen;
    # missing.service runs, but without its state a free port cannot be called missing; the
    # template's instances are unknown, so its claim is not audited.
    assert text.returncode == 1
    assert rows["squatted.service"][0] == "squatted"
    assert rows["squatted.service"][2].startswith("squatter.service")
    assert rows["missing.service"][0] == "idle"
    assert rows["web.service"][2] == "socket unit web.socket (held by PID 1)"
    assert "redis@18086.service" not in rows

    data = json.loads(audit(sandbox, "--format", "json", env=silent).stdout)
    assert len(data["gaps"]) == 1
    assert data["gaps"][0].startswith("D-Bus: ")

"""The example alerting and recording rules (packaging/portguard.rules.yml), proven with
Prometheus's own promtool on what `portguard audit --format prometheus` really printed.

A real systemd in a sandbox goes through four states; the audit's output in each is placed
on promtool's timeline as host a's textfile (tests/alerting.py). Host b's and c's series are
copies of host a's real ones under other `instance` labels, for the fleet views. The series
of node_exporter itself (`node_textfile_mtime_seconds`, `up`) are synthetic, made here, and
so is the audit's timestamp's value: it is the minute the frame stands for.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.alerting import (
    TEXTFILE,
    Frame,
    filled_annotations,
    input_series,
    rules_by_name,
    scraped,
    write_test,
)
from tests.conftest import CHECKOUT
from tests.prometheus_text import parse
from tests.system.guarded import PYTHON, SRC, listener, plain_unit, wait_listening, write_registry
from tests.system.sandbox import Sandbox

RULES = CHECKOUT / "packaging" / "portguard.rules.yml"
PROMTOOL_CACHE = Path("/var/cache/portguard-test/promtool/usr/bin/promtool")  # tools/setup
REGISTRY = """\
version: 1
units:
  web.service:
    listen: [18081/tcp]
    owner: web-team
  api.service:
    listen: ["127.0.0.1:18082/tcp"]
    owner: payments-team
  worker.service:
    listen: [18083/tcp]
    owner: payments-team
  edge.service:
    listen: [18084/tcp]
    owner: web-team
  relay.service:
    listen: [{port: 18090-18093/udp, pool: true, min-free: 2}]
    owner: media-team
"""
# During the drift three of relay's four pool ports are taken: it cannot serve (min-free 2).
HOG = f"{PYTHON} -c " + shlex.quote(
    "import socket, time; held = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in "
    "range(3)]; [s.bind(('::', 18090 + i)) for i, s in enumerate(held)]; time.sleep(10**6)"
)
# During the drift a NAT rule takes edge's port (DESIGN rule 5): REDIRECT to another port.
NAT_RULE = "-t nat -{} PREROUTING -p tcp --dport 18084 -j REDIRECT --to-ports 18085"
SLEEPER = "/bin/sleep infinity"
HEALTHY, DRIFT, BLIND = "healthy", "drift", "blind"


def promtool() -> str:
    found = shutil.which("promtool") or (str(PROMTOOL_CACHE) if PROMTOOL_CACHE.exists() else None)
    if found is None:
        reason = "promtool is missing (tools/setup unpacks it from Debian's prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def test_the_rules_pass_promtools_check() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def audit(sandbox: Sandbox, env: dict[str, str] | None = None) -> str:
    done = sandbox.run(
        PYTHON, "-m", "portguard", "audit", "--format", "prometheus",
        env={"PYTHONPATH": SRC, **(env or {})}, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done
    return done.stdout


def statuses(exposition: str) -> dict[str, str]:
    return {
        s.labels["unit"]: s.labels["status"] for s in parse(exposition)["portguard_claim"].samples
    }


def real_outputs(sandbox: Sandbox) -> dict[str, str]:
    """The audit's output in each state of the sandbox, checked to be that state."""
    write_registry(sandbox, REGISTRY)
    # An address other hosts reach this one at: the NAT rule's traffic comes from them.
    sandbox.run("sh", "-c", "ip link add pg0 type veth peer name pg1 && ip link set pg1 up && "
                "ip addr add 192.0.2.10/24 dev pg0 && ip link set pg0 up")  # fmt: skip
    for unit, port, host in (("web", 18081, "0.0.0.0"), ("api", 18082, "127.0.0.1"),
                             ("worker", 18083, "0.0.0.0")):  # fmt: skip
        plain_unit(sandbox, f"{unit}.service", f"[Service]\nExecStart={listener(host, port)}\n")
    plain_unit(sandbox, "squatter.service",
               f"[Service]\nExecStart={listener('127.0.0.1', 18082)}\n")  # fmt: skip
    plain_unit(sandbox, "hog.service", f"[Service]\nExecStart={HOG}\n")
    sandbox.daemon_reload()
    for unit in ("web.service", "api.service", "worker.service"):
        assert sandbox.start(unit).active, unit
    for port in (18081, 18082, 18083):
        wait_listening(sandbox, port)
    outputs = {HEALTHY: audit(sandbox)}
    assert set(statuses(outputs[HEALTHY]).values()) == {"ok", "idle"}, outputs[HEALTHY]
    assert statuses(outputs[HEALTHY])["edge.service"] == "idle"
    assert statuses(outputs[HEALTHY])["relay.service"] == "ok"  # a pool is never missing

    # Drift: api's port taken while it was down; worker runs but no longer listens.
    sandbox.stop("api.service")
    assert sandbox.start("squatter.service").active
    assert sandbox.start("hog.service").active
    plain_unit(sandbox, "worker.service", f"[Service]\nExecStart={SLEEPER}\n")
    sandbox.daemon_reload()
    sandbox.run("systemctl", "restart", "worker.service")
    sandbox.run("iptables", *NAT_RULE.format("A").split())
    wait_listening(sandbox, 18082)
    outputs[DRIFT] = audit(sandbox)
    assert statuses(outputs[DRIFT]) == {
        "web.service": "ok", "api.service": "squatted", "worker.service": "missing",
        "edge.service": "redirected", "relay.service": "exhausted",
    }, outputs[DRIFT]  # fmt: skip
    held = parse(outputs[DRIFT])["portguard_pool_ports_held_by_others"].samples
    assert [(s.labels["unit"], s.value) for s in held] == [("relay.service", 3)]
    sandbox.run("iptables", *NAT_RULE.format("D").split())

    # Blind: the drift fixed, but systemd cannot be asked.
    sandbox.stop("squatter.service")
    sandbox.stop("hog.service")
    plain_unit(sandbox, "worker.service",
               f"[Service]\nExecStart={listener('0.0.0.0', 18083)}\n")  # fmt: skip
    sandbox.daemon_reload()
    sandbox.run("systemctl", "restart", "worker.service")
    assert sandbox.start("api.service").active
    for port in (18082, 18083):
        wait_listening(sandbox, port)
    outputs[BLIND] = audit(sandbox, {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/nobody-here"})
    blind = parse(outputs[BLIND])
    assert blind["portguard_audit_gaps"].samples[0].value == 1, outputs[BLIND]
    assert set(statuses(outputs[BLIND]).values()) <= {"ok", "idle"}, outputs[BLIND]
    return outputs


def frames(outputs: dict[str, str], instance: str, plan: list[tuple[str | None, int]],
           *, stopped: tuple[int, int] | None = None) -> list[Frame]:  # fmt: skip
    """One frame a minute: PLAN is (state or None for no textfile, minutes) in order. The
    textfile is written every five minutes, except during STOPPED (start, end minute), when
    node_exporter serves the last one written."""
    out: list[Frame] = []
    written = 0
    for state, minutes in plan:
        for _ in range(minutes):
            minute = len(out)
            if state is None:
                out.append(None)
                continue
            running = stopped is None or not stopped[0] <= minute < stopped[1]
            if running and minute % 5 == 0:
                written = minute
            frame = scraped(outputs[state], instance)
            for key in list(frame):
                if key[0] == "portguard_audit_timestamp_seconds":
                    frame[key] = written * 60.0  # the real epoch, placed on the timeline
            labels = (("file", TEXTFILE), ("instance", instance), ("job", "node"))
            frame[("node_textfile_mtime_seconds", labels)] = written * 60.0  # synthetic
            out.append(frame)
    return out


def up(instance: str, minutes: int) -> dict[str, str]:
    """node_exporter's own scrape, always up (synthetic)."""
    return {"series": f'up{{instance="{instance}",job="node"}}', "values": f"1x{minutes - 1}"}


def claim(frame_outputs: str, unit: str, instance: str) -> dict[str, str]:
    """The labels of UNIT's real claim series as an alert carries them (an empty label is
    no label to Prometheus)."""
    (sample,) = (s for s in parse(frame_outputs)["portguard_claim"].samples
                 if s.labels["unit"] == unit)  # fmt: skip
    return {k: v for k, v in {**sample.labels, "instance": instance, "job": "node"}.items() if v}


def test_each_alert_fires_and_resolves_on_real_audit_output(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    outputs = real_outputs(sandbox)
    minutes = 240
    # Host a: drift 10-39m, blind 40-79m, the timer stopped 120-159m, no textfile 160-199m.
    host_a = frames(outputs, "a", [(HEALTHY, 10), (DRIFT, 30), (BLIND, 40), (HEALTHY, 80),
                                   (None, 40), (HEALTHY, 40)], stopped=(116, 160))  # fmt: skip
    host_b = frames(outputs, "b", [(HEALTHY, 10), (DRIFT, 30), (HEALTHY, 200)])
    host_c = frames(outputs, "c", [(HEALTHY, minutes)])
    series = [*input_series(host_a), *input_series(host_b), *input_series(host_c)]
    series += [up(instance, minutes) for instance in "abc"]

    rules = rules_by_name(yaml.safe_load(RULES.read_text()))

    def alert(name: str, labels: dict[str, str], value: str = "") -> dict[str, object]:
        severity = rules[name]["labels"]["severity"]  # type: ignore[index]
        labels = {**labels, "severity": str(severity)}
        return {
            "exp_labels": labels,
            "exp_annotations": filled_annotations(rules[name], labels, value),
        }

    def check(at: int, name: str, *expected: dict[str, object]) -> dict[str, object]:
        return {"eval_time": f"{at}m", "alertname": name, "exp_alerts": list(expected)}

    squatted = {h: alert("PortguardClaimSquatted", claim(outputs[DRIFT], "api.service", h))
                for h in "ab"}  # fmt: skip
    missing = {h: alert("PortguardClaimMissing", claim(outputs[DRIFT], "worker.service", h))
               for h in "ab"}  # fmt: skip
    redirected = {h: alert("PortguardClaimRedirected", claim(outputs[DRIFT], "edge.service", h))
                  for h in "ab"}  # fmt: skip
    exhausted = {h: alert("PortguardPoolExhausted", claim(outputs[DRIFT], "relay.service", h))
                 for h in "ab"}  # fmt: skip
    textfile = {"file": TEXTFILE, "instance": "a", "job": "node"}
    gaps = alert("PortguardAuditGaps", {"instance": "a", "job": "node"}, "1")
    # At 150m the last write was at 115m: 35 minutes ago.
    stale = alert("PortguardAuditStale", textfile, "35m 0s")
    absent = alert("PortguardAuditAbsent", textfile)
    alert_tests = [
        check(5, "PortguardClaimSquatted"),
        check(15, "PortguardClaimSquatted"),  # pending: a deploy's handover is not an alert
        check(30, "PortguardClaimSquatted", squatted["a"], squatted["b"]),
        check(45, "PortguardClaimSquatted"),  # resolved: the squatter left at 40m
        check(5, "PortguardClaimRedirected"),
        check(15, "PortguardClaimRedirected"),  # pending
        check(30, "PortguardClaimRedirected", redirected["a"], redirected["b"]),
        check(45, "PortguardClaimRedirected"),  # resolved: the rule went at 40m
        check(5, "PortguardPoolExhausted"),
        check(15, "PortguardPoolExhausted"),  # pending
        check(30, "PortguardPoolExhausted", exhausted["a"], exhausted["b"]),
        check(45, "PortguardPoolExhausted"),  # resolved: the hog left at 40m
        check(20, "PortguardClaimMissing"),
        check(30, "PortguardClaimMissing", missing["a"], missing["b"]),
        check(45, "PortguardClaimMissing"),
        check(60, "PortguardAuditGaps"),
        check(75, "PortguardAuditGaps", gaps),
        check(85, "PortguardAuditGaps"),
        check(125, "PortguardAuditStale"),
        check(150, "PortguardAuditStale", stale),
        check(165, "PortguardAuditStale"),  # the textfile is gone: the absent alert's turn
        check(165, "PortguardAuditAbsent"),
        check(180, "PortguardAuditAbsent", absent),
        check(215, "PortguardAuditAbsent"),
        check(215, "PortguardAuditStale"),
    ]
    drifted = claim(outputs[DRIFT], "api.service", "a")
    holder, port, proto = drifted["holder"], drifted["port"], drifted["proto"]
    assert holder == "squatter.service"
    fleet_tests = [
        {"expr": "portguard:squatted_hosts:count_by_port_holder", "eval_time": "30m",
         "exp_samples": [{"labels": f'portguard:squatted_hosts:count_by_port_holder'
                                    f'{{holder="{holder}",port="{port}",proto="{proto}"}}',
                          "value": 2}]},
        {"expr": "portguard:squatted_hosts:count_by_port_holder", "eval_time": "50m",
         "exp_samples": []},
        {"expr": 'portguard:claims:sum_by_team_status{team="payments-team"}', "eval_time": "30m",
         "exp_samples": [
             {"labels": 'portguard:claims:sum_by_team_status{status="ok",team="payments-team"}',
              "value": 2},
             {"labels": 'portguard:claims:sum_by_team_status{status="squatted",'
                        'team="payments-team"}', "value": 2},
             {"labels": 'portguard:claims:sum_by_team_status{status="missing",'
                        'team="payments-team"}', "value": 2},
         ]},
        {"expr": 'portguard:hosts:count_by_port_status{port="18082"}', "eval_time": "30m",
         "exp_samples": [
             {"labels": 'portguard:hosts:count_by_port_status{port="18082",proto="tcp",'
                        'status="squatted"}', "value": 2},
             {"labels": 'portguard:hosts:count_by_port_status{port="18082",proto="tcp",'
                        'status="ok"}', "value": 1},
         ]},
    ]  # fmt: skip
    test_file = tmp_path / "portguard.rules.test.yml"
    write_test(test_file, RULES, {
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": alert_tests,
                   "promql_expr_test": fleet_tests}],
    })  # fmt: skip

    done = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_and_documented() -> None:
    """Each alert of the rules has a firing and a resolved check above, and an entry in the
    operator's reference beside the rules (packaging/README.md, "Alerting")."""
    rules = rules_by_name(yaml.safe_load(RULES.read_text()))
    source = Path(__file__).read_text()
    readme = (CHECKOUT / "packaging" / "README.md").read_text()
    for name, rule in rules.items():
        if "alert" in rule:
            assert source.count(f'"{name}"') >= 3, f"{name}: no firing and resolved checks"
            assert f"`{name}`" in readme, f"{name} is not in packaging/README.md"

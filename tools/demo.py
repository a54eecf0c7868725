"""`make demo`: a guarded unit meets a port conflict in a real (sandboxed) systemd.

Boots systemd as PID 1 of its own namespaces over a throwaway overlay of this machine's
root (nothing on the host changes), installs an example registry, and walks through the
incident: the start fails at once, `systemctl status` and `journalctl -xeu` explain who
holds the port, the clean fix, and the start that then succeeds.
"""

import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.system.guarded import (  # noqa: E402
    install_catalog,
    install_generator,
    install_portguard,
    listener,
    wait_listening,
    write_registry,
)
from tests.system.sandbox import Sandbox, boot  # noqa: E402

REGISTRY = """\
version: 1
defaults:
  wait: 10s
units:
  payments-api.service:
    listen: [8080/tcp]
    owner: payments-team
    description: Payments public API
"""
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}")


def shell(sandbox: Sandbox, *argv: str) -> None:
    """Run a command inside the sandbox and show it as an operator would see it."""
    print(f"{DIM}# {' '.join(argv)}{RESET}")
    result = sandbox.run(*argv, check=False, env={"SYSTEMD_COLORS": "0", "COLUMNS": "160"})
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(textwrap.indent(output, "  "))


def main() -> int:
    say("Booting a throwaway systemd (own PID, mount, network namespaces; overlay root)")
    with boot() as sandbox:
        say("The port registry, /etc/portguard/registry.yaml")
        write_registry(sandbox, REGISTRY)
        print(textwrap.indent(REGISTRY, "  "))

        say("An old service still runs on 8080: legacy-api.service")
        sandbox.write_unit(
            "legacy-api.service",
            f"[Unit]\nDescription=Legacy API\n\n[Service]\nExecStart={listener('0.0.0.0', 8080)}\n",
        )
        sandbox.write_unit(
            "payments-api.service",
            "[Unit]\nDescription=Payments public API\n\n"
            f"[Service]\nExecStart={listener('0.0.0.0', 8080)}\n",
        )
        # What the package installs: /usr/bin/portguard, the generator, the journal catalog.
        install_portguard(sandbox)
        install_generator(sandbox)
        install_catalog(sandbox)
        sandbox.daemon_reload()
        shell(sandbox, "systemctl", "start", "legacy-api.service")
        wait_listening(sandbox, 8080)
        shell(sandbox, "ss", "-ltnp", "sport = :8080")

        say("It is in the registry, so portguard-generator guarded it at daemon-reload")
        shell(sandbox, "systemctl", "cat", "payments-api.service")
        say("Starting it fails at once, with the reason")
        shell(sandbox, "systemctl", "start", "payments-api.service")
        shell(sandbox, "systemctl", "status", "--no-pager", "--lines=4", "payments-api.service")
        shell(sandbox, "journalctl", "-xe", "--no-pager", "-u", "payments-api.service",
              "SYSLOG_IDENTIFIER=portguard")  # fmt: skip
        say("The same entry as structured fields, for alerting and dashboards")
        shell(sandbox, "journalctl", "--no-pager", "-o", "verbose", "--output-fields",
              "PORTGUARD_VERDICT,PORTGUARD_OWNER_KIND,PORTGUARD_OWNER_UNIT,PORTGUARD_OWNER_PID,"
              "PORTGUARD_OWNER_COMM,PORTGUARD_REGISTERED_UNIT,PORTGUARD_REMEDY",
              "SYSLOG_IDENTIFIER=portguard")  # fmt: skip
        say("The operator asks who holds the port and what to do")
        shell(sandbox, "portguard", "why", "8080")
        say("Nothing was killed: the holder still runs")
        shell(sandbox, "systemctl", "is-active", "legacy-api.service")

        say("The clean fix, through the owner's supervisor")
        shell(sandbox, "systemctl", "disable", "--now", "legacy-api.service")
        shell(sandbox, "systemctl", "start", "payments-api.service")
        shell(sandbox, "systemctl", "status", "--no-pager", "--lines=0", "payments-api.service")
        say("The registry and reality agree again")
        shell(sandbox, "portguard", "audit")
    say("Done: the sandbox is gone, nothing on this machine changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

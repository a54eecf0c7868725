"""The port pools daemons name in their own configuration files, for `portguard init`: the
ranges they bind on demand (DESIGN rule 6), which no census of listeners can see whole.

Read only when the file is readable, and only what it says (or the daemon's documented
default when it says nothing); never guessed from the ports in use.
"""

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from portguard.registry.claims import Claim, Proto

TURNSERVER_CONF = "/etc/turnserver.conf"  # coturn (turnserver(1))
VSFTPD_CONF = "/etc/vsftpd.conf"  # vsftpd.conf(5)
# coturn's relay ports when min-port/max-port are not set (turnserver(1)).
COTURN_DEFAULT = (49152, 65535)

_SETTING = re.compile(r"^\s*-{0,2}([A-Za-z0-9_-]+)\s*(?:=|\s)\s*(\S*)")


@dataclass(frozen=True, slots=True)
class Daemon:
    unit: str
    path: str
    pools: Callable[[dict[str, str]], Iterator[Claim]]


def _coturn(settings: dict[str, str]) -> Iterator[Claim]:
    """Relay ports, one per allocation, UDP (TCP relays, RFC 6062, draw from them too), on
    its relay-ip when it names one (the last one named: a registry claim has one address)."""
    first = _port(settings.get("min-port"), COTURN_DEFAULT[0])
    last = _port(settings.get("max-port"), COTURN_DEFAULT[1])
    try:
        address = ipaddress.ip_address(settings["relay-ip"]) if "relay-ip" in settings else None
    except ValueError:
        return  # a relay-ip not written as an address: nothing certain to claim
    if first is not None and last is not None and first <= last:
        yield Claim(Proto.UDP, first, last, address, reuseaddr=False, pool=1)


def _vsftpd(settings: dict[str, str]) -> Iterator[Claim]:
    """Passive-mode data ports; without both bounds vsftpd takes any port: no pool. A data
    port is bound on the control connection's address, so its family is the listener's:
    IPv4 alone under listen=YES, both under listen_ipv6=YES (Debian's default)."""
    if settings.get("pasv_enable", "YES").upper() == "NO":
        return
    first = _port(settings.get("pasv_min_port"), None)
    last = _port(settings.get("pasv_max_port"), None)
    ipv4_only = (settings.get("listen", "NO").upper() == "YES"
                 and settings.get("listen_ipv6", "NO").upper() != "YES")  # fmt: skip
    address = ipaddress.IPv4Address(0) if ipv4_only else None
    if first is not None and last is not None and first <= last:
        yield Claim(Proto.TCP, first, last, address, pool=1)


DAEMONS = (
    Daemon("coturn.service", TURNSERVER_CONF, _coturn),
    Daemon("vsftpd.service", VSFTPD_CONF, _vsftpd),
)


def _port(text: str | None, default: int | None) -> int | None:
    if text is None or text == "0":
        return default
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def settings_of(text: str) -> dict[str, str]:
    """KEY=VALUE (or KEY VALUE) lines; comments and blank lines skipped; the last one wins."""
    found = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _SETTING.match(line)
        if match:
            found[match[1].lower()] = match[2]
    return found


def pools(read: Callable[[str], str | None] | None = None) -> dict[str, tuple[Claim, ...]]:
    """Each known daemon's pools by unit, from its configuration file where it is readable."""
    reader = read or _read
    found = {}
    for daemon in DAEMONS:
        text = reader(daemon.path)
        if text is not None:
            claims = tuple(daemon.pools(settings_of(text)))
            if claims:
                found[daemon.unit] = claims
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None

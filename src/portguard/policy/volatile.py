"""Ports a daemon picks anew at each start: `init` records them as comments, never claims.

A claim on such a port blocks the daemon's next start as soon as anything else lands on
its old port (containerd's 127.0.0.1 stream port, rpc.statd's ports), and `audit` calls it
missing. Two ways to tell:

- the port lies in net.ipv4.ip_local_port_range and not in ip_local_reserved_ports: the
  kernel handed it out (bind to port 0), or any client could have taken it first;
- the daemon is known to choose its ports at random unless configured: rpc.statd (Debian's
  rpc-statd.service), pinned only by `port=`/`outgoing-port=` in /etc/nfs.conf's [statd].

Pure: the kernel's settings and the pinned ports come in as parameters.
"""

from collections.abc import Collection

from portguard.registry.localports import LocalPorts

# Units whose daemon binds random ports unless a setting pins them: what pins them.
RANDOM_PORT_UNITS = {
    "rpc-statd.service": "/etc/nfs.conf [statd] port= (and outgoing-port=)",
    "rpc-statd-notify.service": "/etc/nfs.conf [statd] outgoing-port=",
}


def volatile_reason(
    unit: str, port: int, *, local_ports: LocalPorts | None, pinned: Collection[int] = ()
) -> str | None:
    """Why UNIT's listener on PORT is not worth a claim, or None when it is."""
    if unit in RANDOM_PORT_UNITS and port not in pinned:
        return (
            f"{unit} picks this port at random at each start; pin it with "
            f"{RANDOM_PORT_UNITS[unit]} to register it"
        )
    if local_ports is not None and local_ports.unprotected(port, port).ranges:
        low, high = local_ports.ephemeral
        return (
            f"in the ephemeral range {low}-{high} (net.ipv4.ip_local_port_range): most likely "
            "picked at random at each start; if it is fixed, add it to "
            "net.ipv4.ip_local_reserved_ports and register it"
        )
    return None

"""/etc/nfs.conf (nfs.conf(5)), for the one thing portguard asks of it: which ports rpc.statd
is pinned to ([statd] port= and outgoing-port=); without them it picks ports at random."""

import configparser

NFS_CONF = "/etc/nfs.conf"


def statd_ports(path: str = NFS_CONF) -> frozenset[int]:
    """The ports /etc/nfs.conf pins rpc.statd to; none when it is missing or unreadable."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error):
        return frozenset()
    ports = set()
    for key in ("port", "outgoing-port"):
        value = parser.get("statd", key, fallback="").strip()
        if value.isdigit() and 0 < int(value) < 65536:
            ports.add(int(value))
    return frozenset(ports)

"""/etc/nfs.conf as nfs-utils reads it, for the ports rpc.statd is pinned to."""

from pathlib import Path

import pytest

from portguard.host.nfsconf import statd_ports

# Debian's shipped /etc/nfs.conf (nfs-common 2.6), where every setting is commented out.
DEBIAN = """
#
# This is a general configuration for the
# NFS daemons and tools
#
[general]
pipefs-directory=/run/rpc_pipefs
#
[statd]
# debug=0
# port=0
# outgoing-port=0
# name=
# state-directory-path=/var/lib/nfs/statd
# ha-callout=
# no-notify=0
#
[mountd]
# manage-gids=n
"""


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        (DEBIAN, set()),
        (DEBIAN.replace("# port=0", "port=662").replace("# outgoing-port=0", "outgoing-port=2020"),
         {662, 2020}),
        ("[statd]\nport = 32765\n", {32765}),
        ("[statd]\nport=0\n", set()),
        ("[statd]\nport=not-a-port\n", set()),
        ("no section header\nport=1\n", set()),
    ],
)  # fmt: skip
def test_statd_ports(tmp_path: Path, text: str, ports: set[int]) -> None:
    path = tmp_path / "nfs.conf"
    path.write_text(text)
    assert statd_ports(str(path)) == ports


def test_no_file_pins_nothing(tmp_path: Path) -> None:
    assert statd_ports(str(tmp_path / "missing")) == set()

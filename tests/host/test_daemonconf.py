"""The pools daemons' configuration files name (host/daemonconf.py), on the files' own text:
Debian's shipped turnserver.conf and vsftpd.conf leave them unset, and an admin sets them."""

from pathlib import Path

from portguard.host import daemonconf
from portguard.registry.claims import Claim, Proto

COTURN_SHIPPED = """\
# Coturn TURN SERVER configuration file
#listening-port=3478
# Lower and upper bounds of the UDP relay endpoints:
# (default values are 49152 and 65535)
#
#min-port=49152
#max-port=65535
verbose
"""


def pools_of(files: dict[str, str]) -> dict[str, tuple[Claim, ...]]:
    return daemonconf.pools(files.get)


def test_coturn_unset_is_its_documented_default_and_set_is_what_it_says() -> None:
    shipped = pools_of({daemonconf.TURNSERVER_CONF: COTURN_SHIPPED})
    assert shipped == {"coturn.service": (Claim(Proto.UDP, 49152, 65535, reuseaddr=False,
                                                pool=1),)}  # fmt: skip
    narrowed = COTURN_SHIPPED + "min-port=60000\nmax-port = 60999\nrelay-ip=192.0.2.7\n"
    [pool] = pools_of({daemonconf.TURNSERVER_CONF: narrowed})["coturn.service"]
    assert (pool.first, pool.last, pool.pool, str(pool.address)) == (60000, 60999, 1, "192.0.2.7")
    assert pools_of({daemonconf.TURNSERVER_CONF: "relay-ip=eth0\n"}) == {}


def test_an_unreadable_or_nonsense_configuration_names_no_pool() -> None:
    assert pools_of({}) == {}
    assert pools_of({daemonconf.TURNSERVER_CONF: "min-port=70000\n"}) == {}
    assert pools_of({daemonconf.TURNSERVER_CONF: "min-port=60000\nmax-port=50000\n"}) == {}


def test_vsftpd_needs_both_bounds_and_passive_mode() -> None:
    conf = daemonconf.VSFTPD_CONF
    assert pools_of({conf: "listen=YES\n"}) == {}  # any port: no pool to claim
    assert pools_of({conf: "pasv_min_port=40000\n"}) == {}
    both = "pasv_min_port=40000\npasv_max_port=40100\n"
    assert pools_of({conf: both}) == {"vsftpd.service": (Claim(Proto.TCP, 40000, 40100,
                                                                pool=1),)}  # fmt: skip
    assert pools_of({conf: both + "pasv_enable=NO\n"}) == {}
    # listen=YES alone is IPv4's: its data ports are bound on IPv4 addresses only.
    [pool] = pools_of({conf: both + "listen=YES\nlisten_ipv6=NO\n"})["vsftpd.service"]
    assert str(pool) == "0.0.0.0:40000-40100/tcp"
    [pool] = pools_of({conf: both + "listen=NO\nlisten_ipv6=YES\n"})["vsftpd.service"]
    assert str(pool) == "40000-40100/tcp"


def test_the_real_files_are_read_when_there(tmp_path: Path, monkeypatch: object) -> None:
    conf = tmp_path / "vsftpd.conf"
    conf.write_text("pasv_min_port=40000\npasv_max_port=40001\n")
    assert daemonconf._read(str(conf)) == conf.read_text()
    assert daemonconf._read(str(tmp_path / "missing")) is None

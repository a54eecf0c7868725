"""Matching a published port to its container, from the engine's /containers/json listing."""

import pytest

from portguard.host.docker import by_id, proxy_for, proxy_target, publishing

LISTING = [
    {"Id": "a" * 64, "Names": ["/local"], "Image": "img",
     "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]},
    {"Id": "b" * 64, "Names": ["/other"], "Image": "img",
     "Ports": [{"IP": "127.0.0.2", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
               {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}]},
]  # fmt: skip


def test_published_address_picks_the_container() -> None:
    found = publishing(8080, "tcp", LISTING, "127.0.0.2")
    assert found is not None and found.name == "other"
    found = publishing(8080, "tcp", LISTING, "127.0.0.1")
    assert found is not None and found.name == "local"


def test_protocol_and_wildcard_publish() -> None:
    assert publishing(5353, "tcp", LISTING) is None
    found = publishing(5353, "udp", LISTING, "10.1.2.3")
    assert found is not None and found.id == "b" * 64


def test_by_id_accepts_a_prefix() -> None:
    found = by_id("bbbbbbbbbbbb", LISTING)
    assert found is not None and found.name == "other"
    assert by_id("c" * 12, LISTING) is None


# docker-proxy's arguments as dockerd starts it (libnetwork's portmapper).
PROXY = ["/usr/bin/docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8080"]


@pytest.mark.parametrize(
    ("container", "target"),
    [
        (["-container-ip", "172.17.0.2", "-container-port", "80"], "172.17.0.2:80"),
        (["-container-port", "80", "-container-ip", "172.17.0.2"], "172.17.0.2:80"),
        (["-container-ip", "fd00:dead::2", "-container-port", "80"], "[fd00:dead::2]:80"),
        (["--container-ip", "172.17.0.3", "--container-port", "81"], "172.17.0.3:81"),
        # Docker 28 adds a flag without a value, last; elsewhere it shifts no pair either.
        (["-container-ip", "172.17.0.2", "-container-port", "80", "-use-listen-fd"],
         "172.17.0.2:80"),
        (["-container-ip", "172.17.0.2", "-use-listen-fd", "-container-port", "80"],
         "172.17.0.2:80"),
        (["-container-ip", "172.17.0.2"], None),
        (["-container-port", "80"], None),
        (["-container-ip", "172.17.0.2", "-container-port"], None),
        (["-container-ip", "", "-container-port", "80"], None),
        ([], None),
    ],
)  # fmt: skip
def test_proxy_target(container: list[str], target: str | None) -> None:
    assert proxy_target([*PROXY, *container]) == target


def test_proxy_target_of_nothing() -> None:
    assert proxy_target([]) is None
    assert proxy_target(["docker-proxy"]) is None


def test_the_proxy_for_a_port_is_found_from_command_lines() -> None:
    """docker-proxy's real arguments (docker.io 20.10), as /proc/PID/cmdline gives them."""
    proxy = ["/usr/sbin/docker-proxy", "-proto", "{proto}", "-host-ip", "0.0.0.0", "-host-port",
             "{port}", "-container-ip", "172.17.0.{n}", "-container-port", "80"]  # fmt: skip
    argvs = [
        (10, ("/usr/sbin/dockerd", "-H", "fd://")),
        (11, tuple(a.format(proto="tcp", port=8081, n=2) for a in proxy)),
        (12, tuple(a.format(proto="udp", port=8080, n=3) for a in proxy)),
        (13, tuple(a.format(proto="tcp", port=8080, n=4) for a in proxy)),
        (99, ()),  # gone
    ]
    assert proxy_for(8080, "tcp", argvs) == (13, "172.17.0.4:80")
    assert proxy_for(8080, "udp", argvs) == (12, "172.17.0.3:80")
    assert proxy_for(9090, "tcp", argvs) is None

"""Matching a published port to its container, from the engine's /containers/json listing."""

from portguard.docker import by_id, publishing

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

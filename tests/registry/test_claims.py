"""The listen-string grammar and the kernel's overlap rules, on claims alone."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portguard.registry.claims import (
    Claim,
    ClaimSyntaxError,
    ListenParts,
    Proto,
    is_wildcard,
    make_claim,
    overlaps,
    parse_listen,
    parse_port_text,
    reach,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("8080", ListenParts(None, 8080, 8080, Proto.TCP)),
        ("8080/tcp", ListenParts(None, 8080, 8080, Proto.TCP)),
        ("53/udp", ListenParts(None, 53, 53, Proto.UDP)),
        ("53/UDP", ListenParts(None, 53, 53, Proto.UDP)),
        ("1/tcp", ListenParts(None, 1, 1, Proto.TCP)),
        ("65535/tcp", ListenParts(None, 65535, 65535, Proto.TCP)),
        ("08080/tcp", ListenParts(None, 8080, 8080, Proto.TCP)),
        ("127.0.0.1:9090/tcp", ListenParts(V4("127.0.0.1"), 9090, 9090, Proto.TCP)),
        ("0.0.0.0:80/tcp", ListenParts(V4("0.0.0.0"), 80, 80, Proto.TCP)),
        ("[::1]:9090/tcp", ListenParts(V6("::1"), 9090, 9090, Proto.TCP)),
        ("[::]:80", ListenParts(V6("::"), 80, 80, Proto.TCP)),
        ("[2001:db8::1]:443/udp", ListenParts(V6("2001:db8::1"), 443, 443, Proto.UDP)),
        ("[::ffff:10.0.0.1]:80/tcp", ListenParts(V6("::ffff:10.0.0.1"), 80, 80, Proto.TCP)),
        ("9000-9010/tcp", ListenParts(None, 9000, 9010, Proto.TCP)),
        ("9000-9000/udp", ListenParts(None, 9000, 9000, Proto.UDP)),
        ("10.0.0.1:9000-9010/udp", ListenParts(V4("10.0.0.1"), 9000, 9010, Proto.UDP)),
        ("%i/tcp", ListenParts(None, None, None, Proto.TCP)),
        ("%i", ListenParts(None, None, None, Proto.TCP)),
        ("127.0.0.1:%i/udp", ListenParts(V4("127.0.0.1"), None, None, Proto.UDP)),
        ("[::1]:%i/tcp", ListenParts(V6("::1"), None, None, Proto.TCP)),
        ("239.1.2.3:5000/udp", ListenParts(V4("239.1.2.3"), 5000, 5000, Proto.UDP)),
        ("255.255.255.255:67/udp", ListenParts(V4("255.255.255.255"), 67, 67, Proto.UDP)),
    ],
)
def test_listen_forms(text: str, parts: ListenParts) -> None:
    assert parse_listen(text) == parts


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("", 0, "expected a port such as 8080/tcp"),
        ("/tcp", 0, "expected a port such as 8080/tcp"),
        ("0/tcp", 0, "port 0 is out of range (expected 1-65535)"),
        ("65536", 0, "port 65536 is out of range"),
        ("9" * 5000, 0, "port 9999999999... is out of range"),  # beyond int()'s digit limit
        ("http/tcp", 0, "'http' is not a port (expected a number 1-65535)"),
        ("-1/tcp", 0, "'' is not a port"),
        ("+80/tcp", 0, "'+80' is not a port"),
        (" 80/tcp", 0, "' 80' is not a port"),
        ("٨٠/tcp", 0, "'٨٠' is not a port"),  # Arabic-Indic digits are digits, not ports
        ("80/sctp", 3, "unknown protocol 'sctp' (expected tcp or udp)"),
        ("80/", 3, "unknown protocol ''"),
        ("80/tcp/udp", 3, "unknown protocol 'tcp/udp'"),
        (
            "9010-9000/tcp",
            0,
            "range 9010-9000 is reversed (expected the lower port first: 9000-9010)",
        ),
        ("9000-/tcp", 5, "'' is not a port"),
        ("9000-70000/tcp", 5, "port 70000 is out of range"),
        ("1-2-3/tcp", 2, "'2-3' is not a port"),
        ("localhost:80/tcp", 0, "'localhost' is not an IPv4 address"),
        ("1.2.3:80/tcp", 0, "'1.2.3' is not an IPv4 address"),
        ("010.0.0.1:80/tcp", 0, "'010.0.0.1' is not an IPv4 address"),
        (":80/tcp", 0, "'' is not an IPv4 address"),
        ("10.0.0.1:/tcp", 9, "'' is not a port"),
        ("::1:80/tcp", 0, "an IPv6 address goes in brackets"),
        ("[::1:80/tcp", 0, "'[' opens an IPv6 address but no ']' closes it"),
        ("[::1]/tcp", 5, "expected ':PORT' after ']'"),
        ("[::1]80/tcp", 5, "expected ':PORT' after ']'"),
        ("[::1]:/tcp", 6, "'' is not a port"),
        ("[127.0.0.1]:80/tcp", 1, "'127.0.0.1' is not an IPv6 address"),
        ("[fe80::g]:80/tcp", 1, "'fe80::g' is not an IPv6 address"),
        ("[::1]:99999/tcp", 6, "port 99999 is out of range"),
        ("224.0.0.1:80/tcp", 0, "224.0.0.1 is a multicast address: TCP cannot listen on it"),
        ("[ff02::1]:80/tcp", 0, "ff02::1 is a multicast address"),
        ("255.255.255.255:80/tcp", 0, "255.255.255.255 is the broadcast address"),
    ],
)
def test_listen_errors_say_what_and_where(text: str, offset: int, message: str) -> None:
    with pytest.raises(ClaimSyntaxError) as caught:
        parse_listen(text)
    assert message in caught.value.message
    assert caught.value.offset == offset
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize(
    ("claim", "text"),
    [
        (Claim(Proto.TCP, 80, 80), "80/tcp"),
        (Claim(Proto.UDP, 9000, 9010), "9000-9010/udp"),
        (Claim(Proto.TCP, 80, 80, V4("127.0.0.1")), "127.0.0.1:80/tcp"),
        (Claim(Proto.TCP, 80, 81, V6("::1")), "[::1]:80-81/tcp"),
    ],
)
def test_claim_str(claim: Claim, text: str) -> None:
    assert str(claim) == text
    assert claim.ports == range(claim.first, claim.last + 1)


def test_make_claim_carries_options_and_fills_the_template_port() -> None:
    parts = parse_listen("[::]:%i/udp")
    claim = make_claim(parts, v6only=True, reuseaddr=False, reuseport=True, instance="5353")
    assert claim == Claim(Proto.UDP, 5353, 5353, V6("::"), True, False, True)
    assert make_claim(
        parts, v6only=False, reuseaddr=True, reuseport=False, instance="100-200"
    ).ports == range(100, 201)
    with pytest.raises(ClaimSyntaxError, match="needs a template instance"):
        make_claim(parts, v6only=False, reuseaddr=True, reuseport=False, instance=None)


@pytest.mark.parametrize(
    ("text", "ports"), [("6379", (6379, 6379)), ("9000-9010", (9000, 9010)), ("01", (1, 1))]
)
def test_parse_port_text(text: str, ports: tuple[int, int]) -> None:
    assert parse_port_text(text) == ports


@pytest.mark.parametrize("text", ["", "redis", "0", "65536", "2-1", "1.5"])
def test_parse_port_text_refuses(text: str) -> None:
    with pytest.raises(ClaimSyntaxError):
        parse_port_text(text)


# --- reach and overlaps --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "v6only", "expected"),
    [
        (None, False, ((4, None), (6, None))),
        (None, True, ((4, None), (6, None))),
        ("0.0.0.0", False, ((4, None),)),
        ("10.0.0.1", False, ((4, V4("10.0.0.1")),)),
        ("::", False, ((6, None), (4, None))),
        ("::", True, ((6, None),)),
        ("::1", False, ((6, V6("::1")),)),
        ("::ffff:10.0.0.1", False, ((4, V4("10.0.0.1")),)),
        ("::ffff:10.0.0.1", True, ((6, V6("::ffff:10.0.0.1")),)),
        ("::ffff:0.0.0.0", False, ((4, None),)),
    ],
)
def test_reach(address: str | None, v6only: bool, expected: tuple[object, ...]) -> None:
    parsed = None if address is None else ipaddress.ip_address(address)
    assert reach(Claim(Proto.TCP, 80, 80, parsed, v6only=v6only)) == expected


def _claim(text: str, v6only: bool = False) -> Claim:
    return make_claim(
        parse_listen(text), v6only=v6only, reuseaddr=True, reuseport=False, instance=None
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (_claim("80"), _claim("127.0.0.1:80/tcp"), True),
        (_claim("80"), _claim("[::1]:80/tcp"), True),
        (_claim("0.0.0.0:80"), _claim("[::]:80"), True),
        (_claim("0.0.0.0:80"), _claim("[::]:80", v6only=True), False),
        (_claim("[::]:80", v6only=True), _claim("[::1]:80"), True),
        (_claim("[::]:80", v6only=True), _claim("[::]:80"), True),
        (_claim("[::1]:80"), _claim("127.0.0.1:80"), False),
        (_claim("[::ffff:127.0.0.1]:80"), _claim("127.0.0.1:80"), True),
        (_claim("[::ffff:127.0.0.1]:80", v6only=True), _claim("127.0.0.1:80"), False),
        (_claim("[::ffff:0.0.0.0]:80"), _claim("127.0.0.1:80"), True),
        (_claim("80/tcp"), _claim("80/udp"), False),
        (_claim("9000-9010"), _claim("9010"), True),
        (_claim("9000-9010"), _claim("9011-9020"), False),
        (_claim("9000-9010"), _claim("8990-8999"), False),
        (_claim("9000-9010"), _claim("8000-10000"), True),
        (_claim("10.0.0.1:80"), _claim("10.0.0.2:80"), False),
    ],
)
def test_overlaps(a: Claim, b: Claim, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


# --- properties ----------------------------------------------------------------------------

ADDRESSES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            V4("0.0.0.0"),
            V4("127.0.0.1"),
            V6("::"),
            V6("::1"),
            V6("::ffff:127.0.0.1"),
            V6("::ffff:0.0.0.0"),
        ]
    ),
    st.ip_addresses(),
)


@st.composite
def claims(draw: st.DrawFn) -> Claim:
    first = draw(st.integers(1, 65535))
    last = draw(st.integers(first, min(65535, first + draw(st.sampled_from([0, 3, 100])))))
    return Claim(
        draw(st.sampled_from(Proto)),
        first,
        last,
        draw(ADDRESSES),
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.booleans()),
    )


@given(claims(), claims())
def test_overlaps_is_symmetric(a: Claim, b: Claim) -> None:
    assert overlaps(a, b) == overlaps(b, a)


@given(claims())
def test_overlaps_is_reflexive(a: Claim) -> None:
    assert overlaps(a, a)


@given(claims(), claims())
def test_overlap_needs_a_shared_port_and_protocol(a: Claim, b: Claim) -> None:
    if overlaps(a, b):
        assert a.proto == b.proto
        assert set(a.ports) & set(b.ports)


@given(claims(), claims())
def test_a_wildcard_overlaps_everything_on_its_port_and_protocol(a: Claim, b: Claim) -> None:
    wildcard = Claim(a.proto, a.first, a.last)
    assert overlaps(wildcard, b) == (b.proto == a.proto and b.first <= a.last and a.first <= b.last)


@given(claims())
def test_str_parses_back_to_the_same_ports_address_and_protocol(claim: Claim) -> None:
    if (
        claim.proto is Proto.TCP
        and claim.address is not None
        and (claim.address.is_multicast or str(claim.address) == "255.255.255.255")
    ):
        with pytest.raises(ClaimSyntaxError):
            parse_listen(str(claim))
        return
    assert parse_listen(str(claim)) == ListenParts(
        claim.address, claim.first, claim.last, claim.proto
    )


@given(st.text(max_size=40))
def test_parse_listen_raises_only_claim_syntax_errors(text: str) -> None:
    try:
        parts = parse_listen(text)
    except ClaimSyntaxError as exc:
        assert 0 <= exc.offset <= len(text)
        assert exc.message
        return
    assert parts.first is None or 1 <= parts.first <= (parts.last or 0) <= 65535


@pytest.mark.parametrize(
    ("text", "wildcard"),
    [("0.0.0.0", True), ("::", True), ("::ffff:0.0.0.0", False), ("127.0.0.1", False)],
)
def test_only_the_two_wildcards_are_wildcards_on_every_python(text: str, wildcard: bool) -> None:
    # Python 3.13 (Debian 13) calls ::ffff:0.0.0.0 `is_unspecified`; 3.11 (Debian 12) does not.
    assert is_wildcard(ipaddress.ip_address(text)) is wildcard


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("[::ffff:127.0.0.1]:8080/tcp", "[::ffff:127.0.0.1]:8080/tcp"),
        ("[::1]:53/udp", "[::1]:53/udp"),
        ("[2001:db8::1]:80", "[2001:db8::1]:80/tcp"),
        ("10.0.0.1:9000-9010/tcp", "10.0.0.1:9000-9010/tcp"),
    ],
)
def test_a_claim_is_shown_as_the_registry_writes_it(text: str, shown: str) -> None:
    """Python prints ::ffff:127.0.0.1 as ::ffff:7f00:1, which nobody wrote."""
    parts = parse_listen(text)
    claim = make_claim(parts, v6only=False, reuseaddr=True, reuseport=False, instance=None)
    assert str(claim) == shown

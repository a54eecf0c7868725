"""What the guard's drop-in tells it about a unit's bind, from the unit's settings.

Real Debian units are in tests/system/test_debian_services.py; here each rule alone."""

import pytest

from portguard.host.unitfiles import Settings, parse
from portguard.policy.mirror import Decline, guard_args


def settings(text: str) -> Settings:
    found: Settings = {}
    for section, key, value in parse(text):
        found.setdefault((section, key), []).append(value)
    return found


def args(unit: str, text: str) -> tuple[str, ...]:
    return guard_args(unit, settings(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # root (no User=): the default identity, which may bind privileged ports
        ("[Service]\nExecStart=/usr/sbin/nginx\n", ()),
        ("[Service]\nExecStart=/usr/sbin/a\nUser=root\n", ()),
        ("[Service]\nExecStart=/usr/sbin/a\nUser=redis\n", ("--user", "redis")),
        # Debian's chrony.service: User= is not applied to a `!` command
        ("[Service]\nExecStart=!/usr/sbin/chronyd $DAEMON_OPTS\nUser=_chrony\n", ()),
        ("[Service]\nExecStart=+/usr/sbin/a\nUser=x\nCapabilityBoundingSet=\n", ()),
        ("[Service]\nExecStart=-@/usr/sbin/a a\nUser=x\n", ("--user", "x")),
        # capabilities
        ("[Service]\nExecStart=/a\nUser=w\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n",
         ("--user", "w", "--caps", "net_bind_service")),
        ("[Service]\nExecStart=/a\nUser=w\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"
         "CapabilityBoundingSet=CAP_SETUID\n", ("--user", "w")),
        ("[Service]\nExecStart=/a\nCapabilityBoundingSet=\n", ("--caps", "none")),
        ("[Service]\nExecStart=/a\nCapabilityBoundingSet=~CAP_NET_BIND_SERVICE\n",
         ("--caps", "none")),
        ("[Service]\nExecStart=/a\nCapabilityBoundingSet=~CAP_SYS_ADMIN\n", ()),
        ("[Service]\nExecStart=/a\nCapabilityBoundingSet=CAP_SETUID\n"
         "CapabilityBoundingSet=cap_net_bind_service\n", ()),
        ("[Service]\nExecStart=!/a\nCapabilityBoundingSet=CAP_SYS_TIME\n", ("--caps", "none")),
        # a private user namespace's capabilities do not reach the host's network namespace
        ("[Service]\nExecStart=/a\nPrivateUsers=yes\n", ("--caps", "none")),
        ("[Service]\nExecStart=/a\nUser=r\nPrivateUsers=true\n"
         "AmbientCapabilities=CAP_NET_BIND_SERVICE\n", ("--user", "r")),
        # Type=oneshot's several lines: `-` changes how a failure counts, not who runs it
        ("[Service]\nType=oneshot\nExecStart=-/a\nExecStart=/b\nUser=u\n", ("--user", "u")),
        # the last ExecStart= list after a reset is what runs
        ("[Service]\nExecStart=!/a\nExecStart=\nExecStart=/b\nUser=u\n", ("--user", "u")),
    ],
)  # fmt: skip
def test_a_service_is_probed_as_its_execstart_runs(text: str, expected: tuple[str, ...]) -> None:
    assert args("a.service", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Socket]\nListenStream=80\n", ("--socket-options", "reuseaddr")),
        ("[Socket]\nListenDatagram=53\nReusePort=yes\nFreeBind=true\n",
         ("--socket-options", "reuseaddr,reuseport,freebind")),
        ("[Socket]\nListenStream=[::]:80\nBindIPv6Only=ipv6-only\nTransparent=1\n",
         ("--socket-options", "reuseaddr,transparent,v6only")),
        ("[Socket]\nListenStream=80\nBindIPv6Only=both\nReusePort=no\n",
         ("--socket-options", "reuseaddr")),
    ],
)  # fmt: skip
def test_a_socket_unit_is_probed_as_pid_1_binds_it(text: str, expected: tuple[str, ...]) -> None:
    assert args("a.socket", text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[Service]\nType=oneshot\n", "no ExecStart="),
        ("[Service]\nExecStart=/a\nExecStart=!/b\n", "different identities"),
        ("[Service]\nExecStart=/a\nUser=%i\n", "specifier"),
        ("[Service]\nExecStart=/a\nPrivateUsers=yes\nPrivateNetwork=yes\n", "PrivateUsers="),
        ("[Service]\nExecStart=/a\nPrivateUsers=maybe\n", "PrivateUsers=maybe"),
        ("[Service]\nExecStart=/a\nDynamicUser=sometimes\n", "DynamicUser=sometimes"),
    ],
)
def test_what_cannot_be_mirrored_is_declined_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(Decline, match=reason):
        args("a.service", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Service]\nExecStart=/a\nDynamicUser=yes\n", ("--user", "dynamic")),
        ("[Service]\nExecStart=/a\nDynamicUser=yes\nUser=gateway\n", ("--user", "dynamic")),
        ("[Service]\nExecStart=/a\nDynamicUser=yes\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n",
         ("--user", "dynamic", "--caps", "net_bind_service")),
        ("[Service]\nExecStart=/a\nDynamicUser=yes\nUser=root\n", ()),
        ("[Service]\nExecStart=+/a\nDynamicUser=yes\n", ()),
    ],
)  # fmt: skip
def test_a_dynamic_user_unit_binds_as_an_unprivileged_uid(
    text: str, expected: tuple[str, ...]
) -> None:
    """Its uid is picked at start; a bind looks at no more than whether it is unprivileged,
    except SO_REUSEPORT, whose claims `check --user dynamic` leaves unjudged."""
    assert args("a.service", text) == expected


def test_the_dynamic_identity_is_spelled_as_the_free_path_reads_it() -> None:
    from portguard.freepath import binds  # noqa: PLC0415
    from portguard.policy import mirror  # noqa: PLC0415

    assert mirror.DYNAMIC == binds.DYNAMIC
    identity, _, dynamic = binds.parse_bind_options(["--user", mirror.DYNAMIC])
    assert (identity, dynamic) == ((binds.NOBODY, False), True)


def test_a_bad_socket_option_is_declined() -> None:
    with pytest.raises(Decline, match="BindIPv6Only=sometimes"):
        args("a.socket", "[Socket]\nBindIPv6Only=sometimes\n")

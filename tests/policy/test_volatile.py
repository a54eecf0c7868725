"""Which listeners `init` leaves as comments because their port changes at each start."""

from portguard.policy.volatile import volatile_reason
from portguard.registry.localports import LocalPorts, PortSet

LINUX = LocalPorts((32768, 60999), PortSet.parse("45000"))


def test_a_fixed_port_below_the_ephemeral_range_is_claimed() -> None:
    assert volatile_reason("nginx.service", 80, local_ports=LINUX) is None


def test_a_port_the_kernel_hands_out_is_not() -> None:
    reason = volatile_reason("containerd.service", 41234, local_ports=LINUX)
    assert reason is not None and "ephemeral range 32768-60999" in reason


def test_a_reserved_port_in_the_range_is_claimed() -> None:
    assert volatile_reason("app.service", 45000, local_ports=LINUX) is None


def test_rpc_statd_is_random_unless_pinned() -> None:
    reason = volatile_reason("rpc-statd.service", 662, local_ports=LINUX)
    assert reason is not None and "/etc/nfs.conf [statd] port=" in reason
    assert volatile_reason("rpc-statd.service", 662, local_ports=LINUX, pinned={662}) is None


def test_without_the_kernels_settings_only_known_daemons_are_left_out() -> None:
    assert volatile_reason("app.service", 41234, local_ports=None) is None
    assert volatile_reason("rpc-statd.service", 41234, local_ports=None) is not None

"""IPVS live: a virtual service made with ipvsadm on this host's address, a client from another
host landing on the real server, and `check` saying `redirected` by IPVS (issue 26).

Collected only on a kernel with IPVS (tests/system/conftest.py): the kernel CI runs on here
has none (CONFIG_IP_VS is not set, SANDBOX.md), and there the format is proven on a table in
the kernel's own format instead (tests/host/test_ipvs.py). Not a skip: not a test here.
"""

from __future__ import annotations

from tests.system.sandbox import Sandbox
from tests.system.test_redirects import HOST, NODEPORT, POD, guarded, net, oracle

__all__ = ["net"]  # the fixture, shared with test_redirects.py


def test_an_ipvs_virtual_service_is_redirected(net: Sandbox) -> None:
    net.run("ipvsadm", "-A", "-t", f"{HOST}:{NODEPORT}", "-s", "rr")
    net.run("ipvsadm", "-a", "-t", f"{HOST}:{NODEPORT}", "-r", f"{POD}:80", "-m")
    assert oracle(net, NODEPORT) == "pod"  # IPVS takes it at LOCAL_IN, before the socket

    started = guarded(net, NODEPORT)

    assert started.result.active_state == "failed", started.result.status
    entry = started.entry
    assert entry["PORTGUARD_VERDICT"] == "redirected"
    assert entry["PORTGUARD_OWNER_KIND"] == "ipvs"
    assert entry["PORTGUARD_REDIRECT_TO"] == f"{POD}:80"
    assert f"ipvsadm -Ln -t {HOST}:{NODEPORT}" in entry["PORTGUARD_REMEDY"]

"""Attribution without a kernel: a fake host (labelled so) given through Context, each
detector's owner from the cgroup path and the processes it names, and the words every kind
of owner gets from policy/kinds.py. The real host is tests/system's (Docker, Podman, nspawn,
sessions, socket units)."""

import ipaddress
from dataclasses import dataclass, field

import pytest

from portguard.host.occupants import Occupant
from portguard.host.units import FactsUnavailable, UnitFacts
from portguard.policy.attribute import Context, attribute
from portguard.policy.inventory import Capture, plan
from portguard.policy.kinds import KINDS, kind_of
from portguard.policy.owners import Owner, OwnerKind
from portguard.policy.report import describe_owner, remedy_for
from portguard.policy.runtimes import Runtime
from portguard.registry.claims import Proto

LXC_PAYLOAD = "/lxc.payload.web/system.slice/nginx.service"


@dataclass
class FakeHost:
    """A host made of dictionaries: cgroup ids to paths, cgroups to pids, pids to sockets."""

    paths: dict[int, str] = field(default_factory=dict)
    pids: dict[str, list[int]] = field(default_factory=dict)
    sockets: dict[int, list[int]] = field(default_factory=dict)  # pid -> socket inodes
    comms: dict[int, str] = field(default_factory=dict)
    cmdlines: dict[int, tuple[str, ...]] = field(default_factory=dict)
    facts: dict[str, UnitFacts] = field(default_factory=dict)
    bus: bool = True

    def context(self, self_cgroup: str | None = None) -> Context:
        def holders(pids: list[int], inodes: set[int] | None) -> dict[int, list[tuple[int, int]]]:
            held: dict[int, list[tuple[int, int]]] = {}
            for pid in pids:
                for fd, inode in enumerate(self.sockets.get(pid, ()), start=3):
                    if inodes is None or inode in inodes:
                        held.setdefault(inode, []).append((pid, fd))
            return held

        def facts(names: list[str], **kwargs: object) -> dict[str, UnitFacts]:
            if not self.bus:
                raise FactsUnavailable("systemd did not answer")
            return {n: self.facts[n] for n in names if n in self.facts}

        return Context(
            cgroup_paths=lambda ids: {i: self.paths[i] for i in ids if i in self.paths},
            cgroup_pids=lambda path: self.pids.get(path, []),
            socket_holders=holders,
            comm=self.comms.get,
            cmdline=lambda pid: self.cmdlines.get(pid, ()),
            user_name=lambda uid: {0: "root", 1000: "alice"}.get(uid or 0),
            facts=facts,
            self_cgroup=self_cgroup,
        )


def listener(cgroup_id: int, inode: int, *, port: int = 8080, uid: int = 0) -> Occupant:
    return Occupant(Proto.TCP, "LISTEN", ipaddress.ip_address("0.0.0.0"), port, None, inode,
                    uid, cgroup_id, False, None)  # fmt: skip


def owner_of(host: FakeHost, occupant: Occupant, **context: str) -> Owner:
    found = attribute([occupant], host.context(**context))
    return found.holdings[0].owner


def test_a_service_is_named_with_its_holder() -> None:
    host = FakeHost(paths={7: "/system.slice/nginx.service"},
                    pids={"/system.slice/nginx.service": [100, 101]},
                    sockets={101: [55]}, comms={101: "nginx"})  # fmt: skip
    owner = owner_of(host, listener(7, 55))
    assert (owner.kind, owner.unit, owner.pid, owner.comm) == (
        OwnerKind.SERVICE, "nginx.service", 101, "nginx"
    )  # fmt: skip
    assert describe_owner(owner) == "nginx.service (pid 101 nginx)"


def test_when_its_fds_cannot_be_read_the_service_is_named_by_its_main_pid() -> None:
    host = FakeHost(paths={7: "/system.slice/nginx.service"}, comms={100: "nginx"},
                    facts={"nginx.service": UnitFacts("nginx.service", "active", "running",
                                                      main_pid=100)})  # fmt: skip
    owner = owner_of(host, listener(7, 55))
    assert (owner.kind, owner.pid, owner.comm) == (OwnerKind.SERVICE, 100, "nginx")


def test_a_socket_units_listener_is_pid_1s_for_the_unit() -> None:
    facts = {"web.socket": UnitFacts("web.socket", "active", "listening",
                                     triggers=("web.service",))}  # fmt: skip
    host = FakeHost(paths={9: "/system.slice/web.socket"}, comms={1: "systemd"}, facts=facts)
    owner = owner_of(host, listener(9, 56))
    assert (owner.kind, owner.pid, owner.activates) == (OwnerKind.SOCKET, 1, ("web.service",))


def test_a_login_session_and_the_checked_unit_itself() -> None:
    session = "/user.slice/user-1000.slice/session-4.scope"
    host = FakeHost(paths={3: session, 4: "/system.slice/myapp.service"})
    owner = owner_of(host, listener(3, 57, uid=1000))
    assert (owner.kind, owner.user) == (OwnerKind.SESSION, "alice")
    mine = owner_of(host, listener(4, 58), self_cgroup="/system.slice/myapp.service")
    assert (mine.kind, mine.unit) == (OwnerKind.SELF, "myapp.service")


def test_docker_proxy_is_named_from_its_arguments_without_the_api() -> None:
    """An unprivileged guard reads no docker.sock (docker-proxy's real arguments, 20.10)."""
    engine = "/system.slice/docker.service"
    proxy = ("/usr/sbin/docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port",
             "8080", "-container-ip", "172.17.0.2", "-container-port", "80")  # fmt: skip
    host = FakeHost(paths={5: engine}, pids={engine: [20, 21]},
                    cmdlines={20: ("/usr/sbin/dockerd",), 21: proxy},
                    comms={21: "docker-proxy"})  # fmt: skip
    owner = owner_of(host, listener(5, 59))
    assert (owner.kind, owner.runtime, owner.pid) == (OwnerKind.CONTAINER, "docker", 21)
    assert owner.forwards_to == "172.17.0.2:80"
    fix = remedy_for(owner, unit="myapp.service", port=8080, proto="tcp")
    assert "'docker ps --filter publish=8080'" in fix
    assert "systemctl stop docker.service" not in fix


# --- LXC: a kind of owner added as one row (kinds.py) and one detector (attribute.py) ----------
# Unit tests on LXC's documented naming (lxc.container.conf(5), lxc.cgroup.dir.container: the
# payload's processes in `lxc.payload.NAME` at the top of the hierarchy, LXC 4.0 and later),
# not a container LXC ran here.


def test_an_lxc_containers_process_is_the_container_not_its_own_unit() -> None:
    """The container's own systemd puts nginx in nginx.service below the payload cgroup: the
    owner is the container `web`, and the fix is LXC's, not `systemctl stop nginx.service`."""
    host = FakeHost(paths={11: LXC_PAYLOAD}, pids={LXC_PAYLOAD: [300]}, sockets={300: [60]},
                    comms={300: "nginx"})  # fmt: skip
    owner = owner_of(host, listener(11, 60))
    assert (owner.kind, owner.runtime, owner.container_name, owner.unit) == (
        OwnerKind.CONTAINER, "lxc", "web", None
    )  # fmt: skip
    assert describe_owner(owner) == ("lxc container web via the container engine (pid 300 nginx)")
    fix = remedy_for(owner, unit="myapp.service", port=8080, proto="tcp")
    assert fix.startswith("'lxc-stop -n web'")
    assert "systemctl" not in fix.split(" (")[0]


def test_lxc_paths_that_are_not_a_payload_are_not_a_container() -> None:
    host = FakeHost(paths={12: "/lxc.monitor.web", 13: "/system.slice/lxc@web.service"})
    assert owner_of(host, listener(12, 61)).kind is OwnerKind.UNKNOWN
    assert owner_of(host, listener(13, 62)).kind is OwnerKind.SERVICE


def test_init_leaves_an_lxc_containers_listener_out() -> None:
    host = FakeHost(paths={11: LXC_PAYLOAD}, pids={LXC_PAYLOAD: [300]}, sockets={300: [60]},
                    comms={300: "nginx"})  # fmt: skip
    held = attribute([listener(11, 60)], host.context())
    planned = plan(Capture(held.holdings, held.facts))
    assert planned.units == ()
    assert planned.unmapped == (
        "0.0.0.0:8080/tcp: lxc container web via the container engine (pid 300 nginx) — a "
        "container on the host's network, not a unit of its own, left out",
    )


# --- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(OwnerKind))
def test_every_kind_of_owner_has_a_row(kind: OwnerKind) -> None:
    runtimes = list(Runtime) if kind is OwnerKind.CONTAINER else [None]
    for runtime in runtimes:
        owner = Owner(kind, unit="x.service", runtime=runtime, container_name="c")
        row = kind_of(owner)
        assert row is KINDS[(kind, runtime)]
        assert row.describe(owner, "")
        assert remedy_for(owner, unit="myapp.service", port=80, proto="tcp")


def test_a_silent_bus_is_a_gap_not_a_failure() -> None:
    host = FakeHost(paths={7: "/system.slice/nginx.service"}, bus=False)
    found = attribute([listener(7, 55)], host.context())
    assert found.holdings[0].owner.kind is OwnerKind.SERVICE
    assert any("systemd did not answer" in gap for gap in found.gaps)

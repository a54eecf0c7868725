"""Which unit a guard runs in (freepath/check.py), held to host/cgroups.unit_of: the free path
reads /proc/self/cgroup without `os`, attribution reads any cgroup path; both must name the
same unit for the same path."""

from hypothesis import given
from hypothesis import strategies as st

from portguard.freepath.check import own_unit
from portguard.host.cgroups import unit_of

PARTS = ["system.slice", "user.slice", "user-1000.slice", "user@1000.service", "app.slice",
         "nginx.service", "nginx.socket", "session-4.scope", "docker-0a1b.scope", ".control",
         "payload", "init.scope", "machine.slice", "redis@6379.service", "runtime"]  # fmt: skip


@given(st.lists(st.sampled_from(PARTS), max_size=6))
def test_the_free_paths_unit_is_the_one_attribution_names(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    named = unit_of(path)
    expected = named if named is not None and named.endswith((".service", ".socket")) else None
    assert own_unit(f"1:name=systemd:{path}\n0::{path}\n") == expected


def test_a_delegated_units_control_cgroup_is_that_unit() -> None:
    assert own_unit("0::/system.slice/x.service/.control\n") == "x.service"
    assert own_unit("0::/user.slice/user-1000.slice/session-2.scope\n") is None
    assert own_unit("12:pids:/\n") is None  # no cgroup v2 line: the full check says why

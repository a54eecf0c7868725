"""`portguard reserve`: the registry's ports merged into net.ipv4.ip_local_reserved_ports, with a
file in tmp_path standing in for the sysctl."""

import errno
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portguard.cli import main
from portguard.commands import reserve
from portguard.freepath import cache
from portguard.host.sysctl import PORT_RANGE, RESERVED_PORTS
from portguard.registry.entries import Registry, RegistrySource
from portguard.registry.localports import PortSet
from portguard.registry.model import load
from tests.conftest import stand_for_root

REGISTRY = """\
    version: 1
    units:
      api.service:
        listen: [8080/tcp, "127.0.0.1:8081/tcp", "[::1]:8081/tcp", 5353/udp]
      batch.service:
        listen: ["9000-9010/tcp", 9005/udp]
        mode: audit
      redis@.service:
        listen: ["%i/tcp", 16379/tcp]
"""
REGISTERED = "5353,8080-8081,9000-9010,16379"
OTHERS = "40000,40010-40012"  # someone else's entries, e.g. from /etc/sysctl.d


@dataclass
class Host:
    """A registry root and a /proc/sys stand-in in tmp_path."""

    registry: Path
    proc_sys: Path

    @property
    def sysctl(self) -> Path:
        return self.proc_sys / RESERVED_PORTS

    def write_registry(self, text: str) -> None:
        path = self.registry / "registry.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        path.chmod(0o644)

    def set_reserved(self, text: str) -> None:
        self.sysctl.write_text(text + "\n")

    def reserved(self) -> str:
        return self.sysctl.read_text().strip()

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        code = main(["reserve", "--registry", str(self.registry), *args])
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    registry = tmp_path / "etc"
    registry.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    proc_sys = tmp_path / "proc-sys"
    (proc_sys / RESERVED_PORTS).parent.mkdir(parents=True)
    (proc_sys / RESERVED_PORTS).write_text("\n")
    monkeypatch.setattr(reserve, "PROC_SYS", proc_sys)
    # The compiled-registry cache goes to tmp_path, never to the machine's /run.
    monkeypatch.setattr(cache, "CACHE_DIR", str(tmp_path / "run"))
    stand_for_root(monkeypatch)
    made = Host(registry, proc_sys)
    made.write_registry(REGISTRY)
    return made


def parsed(text: str, tmp_path: Path) -> Registry:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    result = load(RegistrySource(path))
    assert not result.errors, result.errors
    return result.registry


def assert_one_line(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("portguard: "), err


# --- the plan (pure) ----------------------------------------------------------------------------


def test_plan_takes_every_concrete_port_tcp_and_udp_ranges_included(tmp_path: Path) -> None:
    reservation = reserve.plan(parsed(REGISTRY, tmp_path), PortSet.parse(OTHERS))
    assert str(reservation.registered) == REGISTERED
    assert str(reservation.merged) == f"{REGISTERED},{OTHERS}"
    assert str(reservation.added) == REGISTERED
    assert reservation.left_out == (("redis@.service", "%i/tcp"),)


def test_plan_adds_only_what_is_missing(tmp_path: Path) -> None:
    current = PortSet.parse("8000-8080,9005,30000")
    reservation = reserve.plan(parsed(REGISTRY, tmp_path), current)
    assert str(reservation.added) == "5353,8081,9000-9004,9006-9010,16379"
    assert str(reservation.merged) == "5353,8000-8081,9000-9010,16379,30000"


def test_plan_of_an_empty_registry_keeps_what_is_set() -> None:
    reservation = reserve.plan(Registry(), PortSet.parse(OTHERS))
    assert (str(reservation.merged), str(reservation.added)) == (OTHERS, "")


PORT = st.integers(1, 400)
RANGES = st.lists(st.tuples(PORT, PORT).map(sorted).map(tuple), max_size=6)


def _ports(ports: PortSet) -> set[int]:
    return {p for a, b in ports.ranges for p in range(a, b + 1)}


@given(RANGES, RANGES)
def test_merge_never_drops_and_adds_exactly_the_missing(
    current: list[tuple[int, int]], registered: list[tuple[int, int]]
) -> None:
    reservation = reserve.Reservation(PortSet.of(current), PortSet.of(registered))
    have, want = _ports(reservation.current), _ports(reservation.registered)
    assert _ports(reservation.merged) == have | want
    assert _ports(reservation.added) == want - have
    again = reserve.Reservation(reservation.merged, reservation.registered)
    assert (again.merged, again.added) == (reservation.merged, PortSet())


@given(st.lists(st.integers(1, 65535), min_size=1, max_size=3000))
def test_long_lists_go_in_pieces_cut_at_commas(ports: list[int]) -> None:
    value = str(PortSet.of([(p, p) for p in ports]))
    chunks = list(reserve._chunks(value))
    assert b"".join(chunks).decode() == value
    assert all(len(c) <= 4000 for c in chunks)
    assert all(c.endswith(b",") for c in chunks[:-1])
    assert all(PortSet.parse(c.decode()).ranges for c in chunks)  # no port cut in two


# --- the command --------------------------------------------------------------------------------


def test_prints_the_merged_list_and_what_it_would_add(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    host.set_reserved(OTHERS)
    code, out, err = host.run(capsys)
    assert code == 0
    assert out == f"{REGISTERED},{OTHERS}\n"
    assert err.splitlines() == [
        "portguard: left out %i/tcp of redis@.service: a template's port is known only per "
        "instance",
        f"portguard: would add {REGISTERED} to net.ipv4.ip_local_reserved_ports "
        "(--apply writes it)",
    ]
    assert host.reserved() == OTHERS  # without --apply nothing is written


def test_apply_writes_the_merged_list_keeping_others_entries(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    host.set_reserved(OTHERS)
    code, out, err = host.run(capsys, "--apply")
    assert code == 0
    assert host.reserved() == f"{REGISTERED},{OTHERS}"
    assert out == f"{host.reserved()}\n"
    assert err.splitlines()[-1] == (
        f"portguard: added {REGISTERED} to net.ipv4.ip_local_reserved_ports"
    )


def test_apply_again_writes_nothing_and_says_so(
    host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    host.set_reserved(OTHERS)
    assert host.run(capsys, "--apply")[0] == 0
    first = host.reserved()

    def no_write(path: Path, ports: PortSet) -> None:
        raise AssertionError(f"wrote {ports}")

    monkeypatch.setattr(reserve, "write_reserved", no_write)
    code, out, err = host.run(capsys, "--apply")
    assert (code, out) == (0, f"{first}\n")
    assert err.splitlines()[-1] == (
        "portguard: every registered port is already in net.ipv4.ip_local_reserved_ports; "
        "nothing written"
    )
    assert host.reserved() == first


def test_apply_of_a_long_list_reads_back_whole(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = range(20000, 24000, 2)  # 2,000 single ports: ~12 KB, more than one write takes
    host.write_registry(
        "version: 1\nunits:\n" + "".join(f"  u{p}.service:\n    listen: [{p}/tcp]\n" for p in ports)
    )
    host.set_reserved(OTHERS)
    code, out, _ = host.run(capsys, "--apply")
    assert code == 0
    assert _ports(PortSet.parse(host.reserved())) == set(ports) | _ports(PortSet.parse(OTHERS))
    assert out.strip() == host.reserved()


def test_missing_registry_is_78(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["reserve", "--registry", str(host.registry / "nope"), "--apply"])
    _, err = capsys.readouterr()
    assert code == 78
    assert_one_line(err)
    assert err == f"portguard: no registry at {host.registry / 'nope'}\n"
    assert host.reserved() == ""


def test_invalid_registry_is_78_and_writes_nothing(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    host.write_registry("version: 1\nunits:\n  a.service:\n    listen: [80000]\n")
    code, out, err = host.run(capsys, "--apply")
    assert (code, out) == (78, "")
    assert "Traceback" not in err
    assert err.startswith(f"portguard: registry invalid: {host.registry}/registry.yaml:4:14:")
    assert host.reserved() == ""


def test_unreadable_sysctl_is_69(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.sysctl.unlink()
    code, out, err = host.run(capsys)
    assert (code, out) == (69, "")
    assert_one_line(err)
    assert err == f"portguard: cannot read {host.sysctl}: No such file or directory\n"


def _failing_writes(monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    """os.open as it is, except that opening for writing fails with ERROR."""
    real: Callable[..., int] = os.open

    def fake(path: str | Path, flags: int, *args: int, **kwargs: int) -> int:
        if flags & os.O_WRONLY:
            raise OSError(error, os.strerror(error), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)


def test_permission_denied_is_77_one_line(
    host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_writes(monkeypatch, errno.EACCES)
    code, out, err = host.run(capsys, "--apply")
    assert (code, out) == (77, "")
    assert_one_line(err)
    assert err == f"portguard: cannot write {host.sysctl}: Permission denied (run as root)\n"


def test_other_write_errors_are_73_one_line(
    host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_writes(monkeypatch, errno.EROFS)
    code, out, err = host.run(capsys, "--apply")
    assert (code, out) == (73, "")
    assert_one_line(err)
    assert err == f"portguard: cannot write {host.sysctl}: Read-only file system\n"


def test_a_list_the_kernel_did_not_keep_is_73(
    host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    host.set_reserved(OTHERS)
    # The sysctl reads back as it was before the write, as if the kernel ignored it.
    monkeypatch.setattr(reserve, "read_sysctl", lambda path: OTHERS)
    code, out, err = host.run(capsys, "--apply")
    assert (code, out) == (73, "")
    assert_one_line(err)
    assert err == (
        f"portguard: wrote {REGISTERED},{OTHERS} to {host.sysctl}, but it reads back {OTHERS}\n"
    )


def test_apply_needs_nothing_without_claims(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.write_registry("version: 1\nunits: {}\n")
    code, out, err = host.run(capsys, "--apply")
    assert (code, out) == (0, "\n")
    assert "nothing written" in err
    assert host.reserved() == ""


POOLS = """\
    version: 1
    units:
      coturn.service:
        listen: [3478/udp, {port: 49152-65535/udp, pool: true}]
"""


def test_reserving_more_than_half_the_ephemeral_range_is_warned_of(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    (host.proc_sys / PORT_RANGE).write_text("32768\t60999\n")
    host.write_registry(POOLS)  # coturn's default pool: 11,848 of 28,232 ports, 41%
    code, _, err = host.run(capsys)
    assert code == 0 and "warning" not in err
    host.write_registry(
        POOLS + "      rtp.service: {listen: [{port: 40000-47000/udp, pool: true}]}\n"
    )
    code, out, err = host.run(capsys, "--apply")
    assert code == 0 and host.reserved() == out.strip() == "3478,40000-47000,49152-65535"
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert warning == (
        "portguard: warning: the reserved ports would take 18,849 of the 28,232 ports of the "
        "ephemeral range 32768-60999 (66%), leaving outgoing connections fewer than half: narrow "
        "the widest pool or range (e.g. coturn's min-port/max-port), or move "
        "net.ipv4.ip_local_port_range away from it"
    )

"""`portguard dropin` as a user runs it: its lines, exit codes and one-line errors."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from portguard.cli import main
from portguard.host.dropins import DROPIN_NAME
from tests.conftest import SYSTEM_PYTHON
from tests.unprivileged import run_as

Run = tuple[int, str, str]


# The guard the drop-ins run: under pytest, sys.argv[0] is pytest's.
GUARD = ("--guard", "/usr/bin/portguard")


def dropin(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = main(["dropin", *GUARD, *args])
    out, err = capsys.readouterr()
    return code, out, err


def fragments(root: Path, *units: str) -> None:
    """Plain unit files for UNITS below ROOT, as a package would ship them."""
    system = root / "usr/lib/systemd/system"
    system.mkdir(parents=True, exist_ok=True)
    for unit in units:
        section = (
            "[Socket]\nListenStream=80\n"
            if unit.endswith(".socket")
            else ("[Service]\nExecStart=/usr/sbin/daemon\n")
        )
        (system / unit).write_text(section)


def conf(root: Path, unit: str) -> Path:
    return root / "etc/systemd/system" / f"{unit}.d" / DROPIN_NAME


def files_below(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir() and "usr/lib" not in str(p))


def test_one_line_per_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fragments(tmp_path, "a.service", "b@.service", "c.socket")
    code, out, err = dropin(capsys, "--root", str(tmp_path), "a.service", "b@.service")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"written {conf(tmp_path, 'a.service')}",
        f"written {conf(tmp_path, 'b@.service')}",
    ]

    code, out, err = dropin(capsys, "--root", str(tmp_path), "a.service", "c.socket")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"unchanged {conf(tmp_path, 'a.service')}",
        f"written {conf(tmp_path, 'c.socket')}",
    ]

    code, out, err = dropin(capsys, "--root", str(tmp_path), "--remove", "a.service", "d.service")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"removed {conf(tmp_path, 'a.service')}",
        f"absent {conf(tmp_path, 'd.service')}",
    ]
    assert files_below(tmp_path) == [conf(tmp_path, "b@.service"), conf(tmp_path, "c.socket")]


INJECTIONS = [
    "evil.service\nExecStartPre=/bin/sh -c id",
    "a%n.service",
    "../../../tmp/x.service",
    "a/b.service",
    "..",
    "my app.service",
    "a].service",
    "x=y.service",
    "a.service\n[Unit]",
    "a.target",
    "a",
]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_a_bad_name_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    code, out, err = dropin(capsys, "--root", str(tmp_path), "ok.service", bad, "ok2.service")
    assert code == 64
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"portguard: {bad!r} is not a unit that can be guarded: ")
    assert files_below(tmp_path) == []


def test_every_bad_name_is_named_on_the_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = dropin(capsys, "--root", str(tmp_path), "a b.service", "c%d.service")
    assert code == 64
    assert err.count("\n") == 1
    assert "'a b.service'" in err and "'c%d.service'" in err


def test_reload_is_refused_for_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dropin(capsys, "--root", str(tmp_path), "--reload", "a.service")
    assert (code, out) == (64, "")
    assert (
        err == f"portguard: --reload with --root {tmp_path}: an image being built has no systemd\n"
    )
    assert files_below(tmp_path) == []


def test_no_unit_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dropin(capsys)
    assert code == 64
    assert err.count("\n") == 1 and "UNIT" in err


def test_foreign_file_is_refused_but_the_others_are_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fragments(tmp_path, "a.service", "b.service")
    foreign = conf(tmp_path, "b.service")
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Service]\nExecStartPre=/usr/local/bin/mine\n")

    for args in ([], ["--remove"]):
        code, out, err = dropin(capsys, "--root", str(tmp_path), *args, "a.service", "b.service")
        assert code == 73
        assert out.splitlines() == [
            f"{'removed' if args else 'written'} {conf(tmp_path, 'a.service')}"
        ]
        assert err.splitlines() == [
            f"portguard: {foreign}: not written by portguard (its first line is not "
            "'# portguard guard drop-in'); left alone"
        ]
        assert foreign.read_text() == "[Service]\nExecStartPre=/usr/local/bin/mine\n"


def test_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dropin(capsys, "--root", str(tmp_path / "nope"), "a.service")
    assert (code, out) == (73, "")
    assert err == f"portguard: {tmp_path / 'nope'}: No such file or directory\n"


def as_unprivileged(argv: list[str], src: Path) -> subprocess.CompletedProcess[str]:
    """ARGV, with SRC importable, as a user that cannot write a root-owned 0755 directory."""
    env = {"PYTHONPATH": str(src)}
    if os.geteuid() == 0:
        return run_as(65534, argv, env=env)
    return subprocess.run(argv, env={**os.environ, **env}, cwd="/", capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


@pytest.fixture
def read_only_image() -> Iterator[Path]:
    """An image root whose etc/systemd/system the unprivileged user can read, not write.

    Made in /tmp itself: pytest's tmp_path lies below a directory only root may enter.
    """
    root = Path(tempfile.mkdtemp(prefix="portguard-image-"))
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    fragments(root, "myapp.service")
    for directory in (root, root / "etc", root / "etc/systemd", system):
        directory.chmod(0o755 if os.geteuid() == 0 else 0o555)
    try:
        yield root
    finally:
        for directory in (root / "etc", root / "etc/systemd", system):
            directory.chmod(0o755)
        shutil.rmtree(root)


def test_unwritable_directory_exits_73_without_a_traceback(
    read_only_image: Path, readable_src: Path
) -> None:
    argv = [SYSTEM_PYTHON, "-m", "portguard", "dropin", *GUARD, "--root", str(read_only_image),
            "myapp.service"]  # fmt: skip
    result = as_unprivileged(argv, readable_src)

    system = read_only_image / "etc/systemd/system"
    assert result.returncode == 73, result
    assert result.stdout == ""
    assert result.stderr == (
        f"portguard: {system / 'myapp.service.d'}: cannot create the directory: Permission denied\n"
    )
    assert list(system.iterdir()) == []


def test_a_unit_the_guard_cannot_mirror_is_refused_and_the_others_are_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fragments(tmp_path, "a.service")
    (tmp_path / "usr/lib/systemd/system/b.service").write_text(
        "[Service]\nExecStart=/usr/bin/b\nUser=%i\n"
    )
    code, out, err = dropin(capsys, "--root", str(tmp_path), "a.service", "b.service", "c.service")
    assert code == 78
    assert out.splitlines() == [f"written {conf(tmp_path, 'a.service')}"]
    assert err.splitlines() == [
        "portguard: b.service: not guarded: User=%i uses a specifier",
        "portguard: c.service: not guarded: no unit file on disk (not readable before boot)",
    ]
    assert files_below(tmp_path) == [conf(tmp_path, "a.service")]


def test_the_drop_in_runs_the_guard_given_with_the_units_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "usr/lib/systemd/system").mkdir(parents=True)
    (tmp_path / "usr/lib/systemd/system/r.service").write_text(
        "[Service]\nExecStart=/usr/bin/r\nUser=redis\nNoExecPaths=/\n"
    )
    code = main(["dropin", "--root", str(tmp_path), "--guard", "/usr/local/bin/portguard",
                 "r.service"])  # fmt: skip
    assert code == 0
    assert "ExecStartPre=+/usr/local/bin/portguard check --user redis\n" in (
        conf(tmp_path, "r.service").read_text()
    )


@pytest.mark.parametrize(
    ("guard", "why"),
    [
        ("portguard", "name an installed portguard executable"),
        ("/usr/lib/python3/dist-packages/portguard/__main__.py", "name an installed portguard"),
        ("/nonexistent/portguard", "not an executable file"),
    ],
)
def test_a_guard_that_cannot_serve_a_unit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], guard: str, why: str
) -> None:
    fragments(tmp_path, "a.service")
    code = main(["dropin", "--guard", guard, "a.service"])
    _, err = capsys.readouterr()
    assert code == 64
    assert why in err
    assert err.count("\n") == 1


def test_a_guard_others_may_change_is_refused(tmp_path: Path) -> None:
    """The guard runs as root: a path a user could swap is a way to root."""
    from portguard.commands.dropin import guard_path  # noqa: PLC0415

    script = tmp_path / "portguard"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(Exception, match="is not root's alone"):
            guard_path(str(script))
    finally:
        tmp_path.chmod(0o755)


def test_the_installed_guard_is_accepted() -> None:
    """The sticky /tmp is fine above a root-owned file; /usr/bin is root's."""
    from portguard.commands.dropin import guard_path  # noqa: PLC0415

    python = os.path.realpath("/usr/bin/python3")
    assert guard_path(python) == python

"""`dropin`'s core against a real directory tree: add, idempotence, remove, atomicity, refusals."""

import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from portguard.commands.dropin import (
    UNIT_DIR,
    Change,
    Outcome,
    add_dropin,
    dropin_path,
    origin,
    remove_dropin,
    run,
)
from portguard.errors import CannotWrite, Exit, UsageError
from portguard.host import units
from portguard.host.dropins import DROPIN_NAME, MARK, dropin_text


def unit_dir(root: Path, unit: str) -> Path:
    return root / UNIT_DIR / f"{unit}.d"


def everything_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_add_writes_the_guard_drop_in(tmp_path: Path) -> None:
    change = add_dropin("myapp.service", root=tmp_path)

    path = tmp_path / "etc/systemd/system/myapp.service.d/50-portguard.conf"
    assert change.path == path == dropin_path("myapp.service", root=tmp_path)
    assert change.outcome is Outcome.WRITTEN
    assert path.read_text() == dropin_text("myapp.service", origin=origin("myapp.service"))
    assert str(change) == f"written {path}"


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = add_dropin("myapp.service", root=tmp_path).path
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    for directory in (path.parent, tmp_path / "etc", tmp_path / UNIT_DIR):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory


def test_origin_says_how_to_undo_it(tmp_path: Path) -> None:
    text = add_dropin("redis@6379.service", root=tmp_path).path.read_text()
    assert "'portguard dropin --remove redis@6379.service' removes it" in text.splitlines()[1]


def test_template_and_instance_get_their_own_directories(tmp_path: Path) -> None:
    add_dropin("redis@.service", root=tmp_path)
    add_dropin("redis@6379.service", root=tmp_path)
    add_dropin("web.socket", root=tmp_path)
    assert sorted(p.name for p in (tmp_path / UNIT_DIR).iterdir()) == [
        "redis@.service.d",
        "redis@6379.service.d",
        "web.socket.d",
    ]
    assert "[Socket]\n" in dropin_path("web.socket", root=tmp_path).read_text()


def test_same_text_is_not_rewritten(tmp_path: Path) -> None:
    path = add_dropin("myapp.service", root=tmp_path).path
    before = path.stat()
    time.sleep(0.01)  # a rewrite would show in mtime_ns

    again = add_dropin("myapp.service", root=tmp_path)

    assert again.outcome is Outcome.UNCHANGED
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_an_older_portguard_text_is_replaced_by_rename(tmp_path: Path) -> None:
    path = dropin_path("myapp.service", root=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(f"{MARK} for myapp.service\n[Service]\nExecStartPre=/usr/bin/old check\n")
    before = path.stat().st_ino

    change = add_dropin("myapp.service", root=tmp_path)

    assert change.outcome is Outcome.WRITTEN
    assert "/usr/bin/old" not in path.read_text()
    assert path.stat().st_ino != before  # a new file took its place: never half written
    assert os.listdir(path.parent) == [DROPIN_NAME]


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    for unit in ("a.service", "b.service", "a.service"):
        add_dropin(unit, root=tmp_path)
    assert everything_below(tmp_path / UNIT_DIR) == [
        "a.service.d",
        f"a.service.d/{DROPIN_NAME}",
        "b.service.d",
        f"b.service.d/{DROPIN_NAME}",
    ]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = dropin_path("myapp.service", root=tmp_path)
    path.parent.mkdir(parents=True)
    old = f"{MARK} for myapp.service\n# an older text\n"
    path.write_text(old)

    def no_space(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(CannotWrite) as raised:
        add_dropin("myapp.service", root=tmp_path)

    assert raised.value.exit_code == Exit.CANTCREAT
    assert raised.value.message == f"{path}: cannot write: No space left on device"
    assert path.read_text() == old
    assert os.listdir(path.parent) == [DROPIN_NAME]


def test_a_foreign_file_is_never_overwritten(tmp_path: Path) -> None:
    path = dropin_path("myapp.service", root=tmp_path)
    path.parent.mkdir(parents=True)
    mine = "[Service]\nExecStartPre=/usr/bin/python3 -m portguard check\n"  # written by hand
    path.write_text(mine)

    with pytest.raises(CannotWrite) as raised:
        add_dropin("myapp.service", root=tmp_path)

    assert raised.value.exit_code == Exit.CANTCREAT
    assert raised.value.message.startswith(f"{path}: not written by portguard")
    assert "left alone" in raised.value.message
    assert path.read_text() == mine


@pytest.mark.parametrize("what", ["symlink", "directory"])
def test_something_else_at_the_path_is_left_alone(tmp_path: Path, what: str) -> None:
    path = dropin_path("myapp.service", root=tmp_path)
    path.parent.mkdir(parents=True)
    target = tmp_path / "target.conf"
    target.write_text(dropin_text("myapp.service", origin="o"))  # even one with our mark
    if what == "symlink":
        path.symlink_to(target)
    else:
        path.mkdir()

    for change in (add_dropin, remove_dropin):
        with pytest.raises(CannotWrite, match="not written by portguard"):
            change("myapp.service", root=tmp_path)

    assert path.is_symlink() if what == "symlink" else path.is_dir()
    assert target.read_text() == dropin_text("myapp.service", origin="o")


def test_remove_deletes_the_file_and_the_directory_it_emptied(tmp_path: Path) -> None:
    add_dropin("myapp.service", root=tmp_path)

    change = remove_dropin("myapp.service", root=tmp_path)

    assert change.outcome is Outcome.REMOVED
    assert str(change) == f"removed {dropin_path('myapp.service', root=tmp_path)}"
    assert everything_below(tmp_path / UNIT_DIR) == []


def test_remove_keeps_the_units_other_drop_ins(tmp_path: Path) -> None:
    add_dropin("myapp.service", root=tmp_path)
    other = unit_dir(tmp_path, "myapp.service") / "10-limits.conf"
    other.write_text("[Service]\nLimitNOFILE=65536\n")

    assert remove_dropin("myapp.service", root=tmp_path).outcome is Outcome.REMOVED

    assert os.listdir(other.parent) == ["10-limits.conf"]


def test_remove_leaves_a_foreign_file_alone(tmp_path: Path) -> None:
    path = dropin_path("myapp.service", root=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("[Service]\nExecStartPre=/usr/local/bin/mine\n")

    with pytest.raises(CannotWrite, match="not written by portguard") as raised:
        remove_dropin("myapp.service", root=tmp_path)

    assert raised.value.exit_code == Exit.CANTCREAT
    assert path.read_text() == "[Service]\nExecStartPre=/usr/local/bin/mine\n"


def test_remove_of_nothing_is_absent_and_touches_nothing(tmp_path: Path) -> None:
    empty = unit_dir(tmp_path, "b.service")
    empty.mkdir(parents=True)  # someone's empty directory stays

    assert remove_dropin("a.service", root=tmp_path).outcome is Outcome.ABSENT
    assert remove_dropin("b.service", root=tmp_path).outcome is Outcome.ABSENT
    assert everything_below(tmp_path / UNIT_DIR) == ["b.service.d"]


def test_a_file_where_the_directory_should_be_cannot_be_written(tmp_path: Path) -> None:
    blocker = unit_dir(tmp_path, "myapp.service")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory\n")

    with pytest.raises(CannotWrite) as raised:
        add_dropin("myapp.service", root=tmp_path)

    assert raised.value.exit_code == Exit.CANTCREAT
    assert str(blocker) in raised.value.message
    assert "Not a directory" in raised.value.message


@pytest.mark.parametrize("change", [add_dropin, remove_dropin])
def test_a_missing_root_is_an_error_not_a_new_tree(
    tmp_path: Path, change: Callable[..., Change]
) -> None:
    missing = tmp_path / "image"
    with pytest.raises(CannotWrite) as raised:
        change("myapp.service", root=missing)
    assert raised.value.message == f"{missing}: No such file or directory"
    assert not missing.exists()


def test_run_checks_every_name_before_writing_any(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        run(["good.service", "bad name.service", "also.service"], remove=False,
            reload=False, root=tmp_path)  # fmt: skip
    assert "'bad name.service'" in raised.value.message
    assert everything_below(tmp_path) == []


def test_run_reload_is_refused_for_an_image(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--reload"):
        run(["myapp.service"], remove=False, reload=True, root=tmp_path)
    assert everything_below(tmp_path) == []


# What systemd allows in a name, and characters that could break out of a path or a unit file.
VALID_CHARS = "ab9.@\\:-_"
HOSTILE_CHARS = "/\n\r%[]= ;#$\t\x00"


@st.composite
def names(draw: st.DrawFn) -> str:
    """A name of valid characters, half of the time with one hostile character inserted."""
    prefix = draw(st.text(st.sampled_from(VALID_CHARS), max_size=20))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(prefix)))
        hostile = draw(st.sampled_from(HOSTILE_CHARS) | st.characters())
        prefix = prefix[:at] + hostile + prefix[at:]
    return prefix


@settings(max_examples=300, deadline=None)
@given(prefix=names(), kind=st.sampled_from(["service", "socket", "target", ""]))
def test_a_name_is_refused_or_lands_exactly_in_its_own_directory(prefix: str, kind: str) -> None:
    unit = f"{prefix}.{kind}" if kind else prefix
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch).resolve()
        try:
            code = run([unit], remove=False, reload=False, root=root)
        except UsageError:
            event("refused")
            assert everything_below(root) == []
            return
        event("written")
        assert code == 0
        system = (root / UNIT_DIR).resolve()
        written = [p for p in root.rglob("*") if p.is_file()]
        assert written == [system / f"{unit}.d" / DROPIN_NAME]
        assert written[0].resolve().parent.parent == system
        lines = written[0].read_text().splitlines()
        assert [line for line in lines if not line.startswith("#")] == [
            f"[{kind.capitalize()}]",
            "ExecStartPre=/usr/bin/portguard check",
        ]


@pytest.fixture
def silent_bus(tmp_path: Path) -> Iterator[str]:
    """A D-Bus address whose socket accepts connections and never answers."""
    path = tmp_path / "bus"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    try:
        yield f"unix:path={path}"
    finally:
        server.close()


def test_reload_over_a_bus_that_never_answers_is_bounded(
    silent_bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", silent_bus)
    began = time.monotonic()
    with pytest.raises(units.ReloadFailed, match=r"did not confirm the reload within 0\.5s"):
        units.reload_daemon(timeout=0.5)
    assert time.monotonic() - began < 2.0


def test_reload_without_a_bus_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/nothing-here")
    with pytest.raises(units.ReloadFailed, match="D-Bus"):
        units.reload_daemon(timeout=10)

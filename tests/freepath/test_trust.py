"""The trust walk (freepath/trust.py): root's files, root's directories all the way up, links
followed; and the rule on one file's stat."""

import os
from pathlib import Path

import pytest

from portguard.freepath import trust
from tests.conftest import NOBODY
from tests.freepath.conftest import IS_ROOT

# --- is_safe: a pure rule on stat results ------------------------------------------------------


def stat(uid: int, gid: int, mode: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("uid", "gid", "mode", "safe"),
    [
        (0, 0, 0o644, True),
        (0, 0, 0o664, True),  # group root may write
        (0, 0, 0o600, True),
        (0, 100, 0o644, True),
        (0, 100, 0o664, False),  # a non-root group may write
        (0, 0, 0o646, False),  # anyone may write
        (0, 0, 0o777, False),
        (1000, 0, 0o644, False),  # not root's
        (NOBODY, NOBODY, 0o600, False),
    ],
)
def test_is_safe(uid: int, gid: int, mode: int, safe: bool) -> None:
    assert trust.is_safe(stat(uid, gid, mode)) is safe


needs_root = pytest.mark.skipif(not IS_ROOT, reason="another user's directory needs chown")


def owned_by(path: Path, uid: int, mode: int) -> Path:
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


@needs_root
def test_a_registry_linked_into_a_users_directory_is_not_trusted(tmp_path: Path) -> None:
    """/etc/portguard/registry.yaml -> /tmp/evil/r.yaml: the file is root's, but the user who
    owns its directory can swap it and move a guarded unit's claim."""
    (tmp_path / "evil").mkdir()
    evil = owned_by(tmp_path / "evil", NOBODY, 0o755)
    target = evil / "r.yaml"
    target.write_text("version: 1\nunits: {}\n")
    target.chmod(0o644)
    root = tmp_path / "portguard"
    root.mkdir(mode=0o755)
    (root / "registry.yaml").symlink_to(target)

    assert trust.first_unsafe([str(root / "registry.yaml")]) == str(evil)
    assert trust.digest(str(root)) is None  # so the free path does not answer


@needs_root
def test_a_directory_a_user_owns_above_the_registry_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    above = owned_by(tmp_path / "srv", NOBODY, 0o755)
    root = above / "portguard"
    root.mkdir(mode=0o755)
    (root / "registry.yaml").write_text("version: 1\n")
    assert trust.first_unsafe([str(root), str(root / "registry.yaml")]) == str(above)


@needs_root
def test_a_sticky_root_directory_on_the_way_is_trusted_with_roots_entries(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    shared = owned_by(tmp_path / "tmp", 0, 0o1777)
    root = shared / "portguard"
    root.mkdir(mode=0o755)
    (root / "registry.yaml").write_text("version: 1\n")
    assert trust.first_unsafe([str(root / "registry.yaml")]) is None
    # Without the sticky bit anyone could rename root's entry away and put theirs in its place.
    shared.chmod(0o777)
    assert trust.first_unsafe([str(root / "registry.yaml")]) == str(shared)

"""Unit files read as systemd reads them: search path, precedence, drop-ins, templates.

What systemd itself makes of the same trees is tests/system/test_unitfiles.py's (systemctl
show against this reader, in a sandbox)."""

import os
import textwrap
from pathlib import Path

import pytest

from portguard.host.unitfiles import UnitFileError, UnitFiles, parse, read_settings, search_path

USR = "usr/lib/systemd/system"
ETC = "etc/systemd/system"
RUN = "run/systemd/system"


def put(root: Path, path: str, text: str) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return target


def values(root: Path, unit: str, key: str, section: str = "Service") -> list[str]:
    return read_settings(unit, str(root)).get((section, key), [])


def test_the_search_path_is_systemds_in_its_order(tmp_path: Path) -> None:
    paths = [p.removeprefix(str(tmp_path)) for p in search_path(str(tmp_path))]
    assert paths.index("/etc/systemd/system") < paths.index("/run/systemd/system")
    assert paths.index("/run/systemd/system") < paths.index("/usr/lib/systemd/system")
    assert paths[0] == "/etc/systemd/system.control"
    assert paths[-1] == "/run/systemd/generator.late"


def test_a_merged_usr_lists_lib_once(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    paths = [p.removeprefix(str(tmp_path)) for p in search_path(str(tmp_path))]
    assert "/lib/systemd/system" in paths
    assert "/usr/lib/systemd/system" not in paths


def test_the_first_fragment_in_the_search_path_wins(tmp_path: Path) -> None:
    put(tmp_path, f"{USR}/a.service", "[Service]\nUser=vendor\n")
    put(tmp_path, f"{ETC}/a.service", "[Service]\nUser=admin\n")
    assert values(tmp_path, "a.service", "User") == ["admin"]


def test_an_instance_falls_back_to_its_template(tmp_path: Path) -> None:
    put(tmp_path, f"{USR}/redis@.service", "[Service]\nUser=redis\n")
    fragment, _ = UnitFiles(str(tmp_path)).locate("redis@6379.service")
    assert fragment.endswith("/redis@.service")
    assert values(tmp_path, "redis@6379.service", "User") == ["redis"]


def test_drop_ins_apply_in_name_order_whatever_their_directory(tmp_path: Path) -> None:
    put(tmp_path, f"{USR}/a.service", "[Service]\nUser=one\n")
    put(tmp_path, f"{ETC}/a.service.d/20-b.conf", "[Service]\nUser=three\n")
    put(tmp_path, f"{USR}/a.service.d/10-a.conf", "[Service]\nUser=two\n")
    put(tmp_path, f"{RUN}/service.d/30-all.conf", "[Service]\nUser=four\n")
    put(tmp_path, f"{USR}/a.service.d/notes.txt", "[Service]\nUser=never\n")
    assert values(tmp_path, "a.service", "User") == ["one", "two", "three", "four"]


def test_a_drop_in_name_in_a_higher_directory_hides_the_lower_one(tmp_path: Path) -> None:
    put(tmp_path, f"{USR}/a.service", "[Service]\nUser=one\n")
    put(tmp_path, f"{USR}/a.service.d/override.conf", "[Service]\nUser=vendor\n")
    put(tmp_path, f"{ETC}/a.service.d/override.conf", "[Service]\nUser=admin\n")
    assert values(tmp_path, "a.service", "User") == ["one", "admin"]


def test_a_drop_in_linked_to_dev_null_is_masked(tmp_path: Path) -> None:
    put(tmp_path, f"{USR}/a.service", "[Service]\nUser=one\n")
    put(tmp_path, f"{USR}/a.service.d/x.conf", "[Service]\nUser=vendor\n")
    (tmp_path / ETC / "a.service.d").mkdir(parents=True)
    (tmp_path / ETC / "a.service.d/x.conf").symlink_to("/dev/null")
    assert values(tmp_path, "a.service", "User") == ["one"]


def test_template_and_prefix_drop_ins_reach_an_instance(tmp_path: Path) -> None:
    put(tmp_path, f"{USR}/my-app@.service", "[Service]\nUser=a\n")
    put(tmp_path, f"{USR}/my-app@.service.d/1.conf", "[Service]\nUser=b\n")
    put(tmp_path, f"{USR}/my-.service.d/2.conf", "[Service]\nUser=c\n")
    put(tmp_path, f"{USR}/my-app@x.service.d/3.conf", "[Service]\nUser=d\n")
    assert values(tmp_path, "my-app@x.service", "User") == ["a", "b", "c", "d"]


def test_a_masked_unit_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ETC).mkdir(parents=True)
    (tmp_path / ETC / "a.service").symlink_to("/dev/null")
    put(tmp_path, f"{USR}/a.service", "[Service]\nUser=one\n")
    with pytest.raises(UnitFileError, match="masked"):
        read_settings("a.service", str(tmp_path))


def test_a_missing_unit_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UnitFileError, match="no unit file on disk"):
        read_settings("a.service", str(tmp_path))


def test_generated_fragments_count_only_when_asked(tmp_path: Path) -> None:
    put(tmp_path, "run/systemd/generator/a.service", "[Service]\nUser=gen\n")
    assert values(tmp_path, "a.service", "User") == ["gen"]
    with pytest.raises(UnitFileError, match="written by another generator"):
        read_settings("a.service", str(tmp_path), generated=False)


def test_an_unreadable_unit_is_an_error(tmp_path: Path) -> None:
    put(tmp_path, f"{USR}/a.service", "[Service]\n").write_bytes(b"[Service]\nUser=\xff\n")
    with pytest.raises(UnitFileError, match="not UTF-8"):
        read_settings("a.service", str(tmp_path))
    os.chmod(tmp_path / USR / "a.service", 0o000)
    if os.geteuid() != 0:
        with pytest.raises(UnitFileError):
            read_settings("a.service", str(tmp_path))


def test_the_parser_reads_what_systemd_reads() -> None:
    text = textwrap.dedent("""
        # a comment
        ; another
        [Unit]
        Description = A  service
        [Service]
        ExecStart=/bin/a \\
          --flag \\
        # a comment inside a continuation is skipped
          --other
        User=
        Environment=A=b
        """)
    assert parse(text) == [
        ("Unit", "Description", "A  service"),
        # the backslash becomes a space, as in systemd's parser
        ("Service", "ExecStart", "/bin/a  --flag  --other"),
        ("Service", "User", ""),
        ("Service", "Environment", "A=b"),
    ]

"""portguard-generator (generator.py, fastreader.py): drop-ins from the registry, never a
broken boot, nothing written outside the output directory, no heavy imports.

Effects are real (files in tmp_path); the kernel log is a file the test names.
"""

import os
import re
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portguard.commands import generator
from portguard.host.dropins import DROPIN_NAME
from portguard.registry import fastreader
from portguard.registry.entries import RegistrySource
from portguard.registry.lint import check_registry
from portguard.registry.model import load
from tests.conftest import (
    DATA,
    EXAMPLE_REGISTRY,
    NOBODY,
    RULES,
    SRC,
    position,
    shipped,
    stand_for_root,
)
from tests.host.test_dropins import directives

ENTRY = shipped(
    "systemd/portguard-generator", "/usr/lib/systemd/system-generators/portguard-generator"
)
PYTHON = "/usr/bin/python3"
IS_ROOT = os.geteuid() == 0
GUARD = "ExecStartPre=+/usr/bin/portguard check"
WARN_GUARD = "ExecStartPre=-+/usr/bin/portguard check"


@dataclass
class Setup:
    """A registry root, an output directory, a kernel log and a root of unit files (where
    every unit the registry names gets a plain fragment unless a test wrote one), all in
    tmp_path."""

    root: Path
    out: Path
    kmsg: Path
    units: Path
    env: dict[str, str] = field(default_factory=dict)

    def write(self, text: str, name: str = "registry.yaml") -> Path:
        path = self.root / name
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        os.chmod(path, 0o644)
        for unit in re.findall(
            r"^ +[\"']?([\w@.:-]+\.(?:service|socket))[\"']?:", path.read_text(), re.M
        ):
            if not (self.units / unit).exists():
                self.unit(unit, PLAIN_SOCKET if unit.endswith(".socket") else PLAIN_SERVICE)
        return path

    def unit(self, name: str, text: str) -> Path:
        """A unit file under the unit root's /usr/lib/systemd/system."""
        path = self.units / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def run(self, *argv: str) -> int:
        return generator.main(
            list(argv) if argv else [str(self.out)] * 3, environ=self.env, kmsg=str(self.kmsg)
        )

    def dropin(self, unit: str) -> str:
        return (self.out / f"{unit}.d" / DROPIN_NAME).read_text()

    def written(self) -> list[str]:
        """Every file under the output directory, relative to it."""
        return sorted(str(p.relative_to(self.out)) for p in self.out.rglob("*") if p.is_file())

    def log_lines(self) -> list[str]:
        return self.kmsg.read_text().splitlines()


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    root = tmp_path / "etc-portguard"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    out = tmp_path / "generator"
    out.mkdir()
    stand_for_root(monkeypatch)
    kmsg = tmp_path / "kmsg"
    kmsg.touch()  # the generator opens the kernel log, never creates it
    system = tmp_path / "os"
    env = {generator.REGISTRY_ENV: str(root), generator.UNIT_ROOT_ENV: str(system)}
    yield Setup(root, out, kmsg, system / "usr/lib/systemd/system", env)


UNIT_KEY = r"^ +[\"']?([\w@.:-]+\.(?:service|socket))[\"']?:"
PLAIN_SERVICE = "[Service]\nExecStart=/usr/bin/daemon\n"
PLAIN_SOCKET = "[Socket]\nListenStream=8080\n"


THREE_MODES = """
    version: 1
    defaults:
      mode: warn
    units:
      web.service:
        listen: [8080/tcp]
        mode: enforce
      batch.service:
        listen: [8081/tcp]
      metrics.service:
        listen: [9100/tcp]
        mode: audit
"""


@pytest.mark.skipif(not IS_ROOT, reason="giving the registry to another user needs chown")
def test_stand_for_root_reaches_the_generators_trust_walk(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one stand-in that lets an unprivileged run trust its own files patches what the
    generator really calls (it once patched a name the generator no longer has)."""
    path = setup.write(THREE_MODES)
    os.chown(path, NOBODY, NOBODY)
    assert setup.run() == 0
    assert setup.written() == []
    assert "not trusted" in setup.log_lines()[-1]

    stand_for_root(monkeypatch, me=NOBODY, my_group=NOBODY)
    assert setup.run() == 0
    assert setup.written() == [f"batch.service.d/{DROPIN_NAME}", f"web.service.d/{DROPIN_NAME}"]


# --- what is generated ---------------------------------------------------------------------


def test_enforce_blocks_warn_logs_audit_gets_nothing(setup: Setup) -> None:
    setup.write(THREE_MODES)

    assert setup.run() == 0

    assert setup.written() == [f"batch.service.d/{DROPIN_NAME}", f"web.service.d/{DROPIN_NAME}"]
    web = setup.dropin("web.service").splitlines()
    assert web[2:] == ["[Service]", GUARD]
    batch = setup.dropin("batch.service").splitlines()
    assert batch[2:] == ["[Service]", WARN_GUARD]
    assert "(mode: warn)" in batch[1]
    assert setup.log_lines() == []


def test_header_names_the_generator_and_the_source_file_line_column(setup: Setup) -> None:
    setup.write("version: 1\n")
    text = """
        version: 1
        units:
          # the web front end
          web.service:
            listen: [8080/tcp]
          "api.socket":
            listen: [8443/tcp]
    """
    path = setup.write(text, "registry.d/20-web.yaml")
    written = textwrap.dedent(text).lstrip("\n")

    setup.run()

    line, column = position(written, "web.service")
    assert setup.dropin("web.service").splitlines()[:2] == [
        "# portguard guard drop-in for web.service",
        f"# Generated by portguard-generator from {path}:{line}:{column} (mode: enforce); "
        "edit the registry, not this file",
    ]
    line, column = position(written, "api.socket")  # inside the quotes, as lint says
    api = setup.dropin("api.socket").splitlines()
    assert f"from {path}:{line}:{column} " in api[1]
    # PID 1 binds a socket unit's addresses, always with SO_REUSEADDR.
    assert api[2:] == ["[Socket]", f"{GUARD} --socket-options reuseaddr"]


def test_a_template_gets_the_templates_dropin(setup: Setup) -> None:
    setup.write("""
        version: 1
        units:
          redis@.service:
            listen: ["%i/tcp"]
          redis@6379.service:
            mode: warn
            listen: [6379/tcp]
    """)

    setup.run()

    assert setup.written() == [
        f"redis@.service.d/{DROPIN_NAME}",
        f"redis@6379.service.d/{DROPIN_NAME}",
    ]
    assert setup.dropin("redis@.service").splitlines()[-1] == GUARD
    assert setup.dropin("redis@6379.service").splitlines()[-1] == WARN_GUARD


def test_defaults_of_the_main_file_reach_registry_d_and_a_file_may_override(setup: Setup) -> None:
    setup.write("version: 1\ndefaults:\n  mode: warn\n")
    setup.write("version: 1\nunits:\n  a.service:\n    listen: [1001]\n", "registry.d/10-a.yaml")
    setup.write(
        "version: 1\nunits:\n  b.service:\n    listen: [1002]\ndefaults:\n  mode: enforce\n",
        "registry.d/20-b.yaml",
    )

    setup.run()

    assert setup.dropin("a.service").splitlines()[-1] == WARN_GUARD
    assert setup.dropin("b.service").splitlines()[-1] == GUARD


def test_only_the_normal_directory_is_written(setup: Setup, tmp_path: Path) -> None:
    setup.write(THREE_MODES)
    early, late = tmp_path / "early", tmp_path / "late"
    early.mkdir()
    late.mkdir()

    setup.run(str(setup.out), str(early), str(late))

    assert len(setup.written()) == 2
    assert list(early.iterdir()) == list(late.iterdir()) == []


def test_a_missing_output_directory_is_made(setup: Setup) -> None:
    setup.write(THREE_MODES)
    normal = setup.out / "not" / "yet"

    setup.run(str(normal))

    assert (normal / "web.service.d" / DROPIN_NAME).exists()


# --- when nothing is generated --------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["a", "b", "c", "d"], [""]])
def test_a_wrong_command_line_writes_nothing_and_says_so_once(
    setup: Setup, argv: list[str], tmp_path: Path
) -> None:
    setup.write(THREE_MODES)
    before = sorted(p.name for p in tmp_path.iterdir())

    assert generator.main(argv, environ=setup.env, kmsg=str(setup.kmsg)) == 0

    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert setup.written() == []
    [line] = setup.log_lines()
    assert line.startswith(f"<4>portguard-generator[{os.getpid()}]: usage: portguard-generator ")


def test_a_user_manager_gets_nothing(setup: Setup) -> None:
    setup.write(THREE_MODES)
    setup.env["SYSTEMD_SCOPE"] = "user"

    setup.run()

    assert setup.written() == []
    assert setup.log_lines() == []


@pytest.mark.parametrize("layout", ["no directory", "empty directory", "empty registry.d"])
def test_no_registry_generates_nothing_and_says_nothing(setup: Setup, layout: str) -> None:
    if layout == "no directory":
        setup.env[generator.REGISTRY_ENV] = str(setup.root / "absent")
    elif layout == "empty registry.d":
        (setup.root / "registry.d").mkdir()

    assert setup.run() == 0

    assert setup.written() == []
    assert setup.log_lines() == []


BROKEN = {
    "unknown key": ("version: 1\nunits:\n  a.service:\n    listen: [80]\n    wiat: 10s\n", "5:5"),
    "yaml syntax": ("version: 1\nunits:\n  a.service:\n    listen: [80\n", "5:1"),
    # A shape the fast reader declines: the full reader finds the overlap.
    "overlap": (
        "version: 1\nunits:\n  a.service:\n    listen: [80]\n  b.service:\n"
        "    listen: [127.0.0.1:80/tcp]\n",
        "6:14",
    ),
    "empty file": ("", None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_registry_generates_nothing_and_logs_one_error(setup: Setup, case: str) -> None:
    text, where = BROKEN[case]
    setup.write("version: 1\nunits:\n  good.service:\n    listen: [8080]\n")
    bad = setup.write(text, "registry.d/50-bad.yaml")

    assert setup.run() == 0

    assert setup.written() == []
    [line] = setup.log_lines()
    assert line.startswith(f"<3>portguard-generator[{os.getpid()}]: registry invalid: {bad}")
    if where:
        assert f"{bad}:{where}: error: " in line
    assert line.endswith("; no guard drop-ins generated (run 'portguard lint')")


def test_a_unit_in_two_files_is_a_broken_registry(setup: Setup) -> None:
    setup.write("version: 1\nunits:\n  a.service:\n    listen: [80]\n")
    setup.write("version: 1\nunits:\n  a.service:\n    listen: [81]\n", "registry.d/a.yaml")

    setup.run()

    assert setup.written() == []
    [line] = setup.log_lines()
    assert "a.service is already defined at" in line


def test_an_unreadable_registry_is_a_broken_one(setup: Setup) -> None:
    (setup.root / "registry.yaml").symlink_to(setup.root / "gone.yaml")

    setup.run()

    assert setup.written() == []
    [line] = setup.log_lines()
    assert "registry.yaml: error: cannot read: No such file or directory" in line


@pytest.mark.parametrize("target", ["registry.yaml", "registry.d", "."])
def test_a_registry_others_may_write_is_not_trusted(setup: Setup, target: str) -> None:
    setup.write(THREE_MODES)
    setup.write("version: 1\n", "registry.d/10-x.yaml")
    path = setup.root / target
    os.chmod(path, 0o777 if path.is_dir() else 0o666)

    setup.run()

    assert setup.written() == []
    [line] = setup.log_lines()
    shown = os.path.normpath(path)
    assert line.endswith(
        f": {shown}: writable by a user other than root, so it is not trusted (fix: chown "
        f"root:root {shown}; chmod go-w {shown}); no guard drop-ins generated"
    )


# --- failures while writing, and the log ----------------------------------------------------


def test_an_output_directory_that_cannot_be_made_is_one_line(setup: Setup) -> None:
    setup.write(THREE_MODES)
    blocker = setup.out / "file"
    blocker.write_text("")

    assert setup.run(str(blocker / "normal")) == 0

    [line] = setup.log_lines()
    assert f"cannot write to {blocker}/normal: Not a directory; no unit is guarded" in line


def test_a_dropin_that_cannot_be_written_leaves_the_others(setup: Setup) -> None:
    setup.write(THREE_MODES)
    (setup.out / "web.service.d").write_text("in the way")

    assert setup.run() == 0

    assert setup.written() == [f"batch.service.d/{DROPIN_NAME}", "web.service.d"]
    [line] = setup.log_lines()
    assert f"cannot write {setup.out}/web.service.d/{DROPIN_NAME}: Not a directory;" in line
    assert list(setup.out.glob("**/.*")) == []  # nothing half-written left behind


def test_a_surprise_is_one_line_and_exit_zero(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup.write(THREE_MODES)

    def boom(root: str) -> list[generator.Unit]:
        raise RuntimeError("boom")

    monkeypatch.setattr(generator, "registry_units", boom)

    assert setup.run() == 0

    assert setup.written() == []
    [line] = setup.log_lines()
    assert "internal error, no guard drop-ins generated: RuntimeError: boom" in line


def test_a_surprise_in_the_fast_reader_falls_back_to_the_full_one(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup.write(THREE_MODES)

    def boom(main: str | None, dropins: list[str]) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(fastreader, "read", boom)

    setup.run()

    assert len(setup.written()) == 2
    assert setup.log_lines() == []


def test_without_a_kernel_log_the_line_goes_to_stderr(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.write("version: 2\n")
    setup.kmsg = setup.kmsg / "not-a-directory" / "kmsg"

    assert setup.run() == 0

    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("<3>portguard-generator: registry invalid: ")


def test_a_log_line_is_one_bounded_line(setup: Setup) -> None:
    generator.log("x" * 5000 + "\nsecond line", kmsg=str(setup.kmsg))

    data = setup.kmsg.read_bytes()
    assert data.count(b"\n") == 1
    assert data.endswith(b"...\n")
    assert len(data) <= generator.KMSG_MAX_BYTES + 1


# --- the process: imports, files, the entry script ------------------------------------------

needs_root = pytest.mark.skipif(not IS_ROOT, reason="the registry must be root's to be trusted")

# Two units sharing a port by SO_REUSEPORT: valid (lint warns), but the fast reader declines.
DECLINED = """
    version: 1
    units:
      a.service:
        listen: [{port: 80, reuseport: true}]
      b.service:
        listen: [{port: 127.0.0.1:80/tcp, reuseport: true}]
"""


def run_entry(
    setup: Setup, *, extra: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The entry script in a child, as systemd runs it (-B); prints the modules it imported.

    Its kernel log is setup.kmsg: a test line must not reach the host's.
    """
    program = (
        "import atexit, sys; atexit.register(lambda: print(' '.join(sorted(sys.modules)))); "
        "import portguard.commands.generator as generator; "
        f"generator.KMSG = {str(setup.kmsg)!r}; {extra}"
        f"exec(compile(open({str(ENTRY)!r}).read(), {str(ENTRY)!r}, 'exec'), "
        "{'__name__': '__main__'})"
    )
    home = str(cwd or setup.root)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "HOME": home, "TMPDIR": home,
           **setup.env}  # fmt: skip
    return subprocess.run(
        [PYTHON, "-B", "-c", program, str(setup.out)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


HEAVY = (
    "pyroute2",
    "pystemd",
    "portguard.host.sockets",
    "portguard.host.units",
    "portguard.commands.check",
)


FAST_PATH_MODULES = {
    "portguard",
    "portguard.freepath",
    "portguard.freepath.trust",
    "portguard.commands",
    "portguard.commands.generator",
    "portguard.errors",
    "portguard.host",
    "portguard.host.dropins",
    "portguard.host.unitfiles",
    "portguard.policy",
    "portguard.policy.mirror",
    "portguard.registry",
    "portguard.registry.fastreader",
    "portguard.registry.keys",
    "portguard.registry.timespan",
    "portguard.registry.unitname",
}


def heavy(modules: str) -> list[str]:
    return [m for m in modules.split() if m.startswith(HEAVY)]


@needs_root
@pytest.mark.parametrize("reader", ["fast", "full", "broken"])
def test_the_generator_imports_neither_pyroute2_nor_pystemd(setup: Setup, reader: str) -> None:
    setup.write({"fast": THREE_MODES, "full": DECLINED, "broken": BROKEN["overlap"][0]}[reader])

    done = run_entry(setup)

    assert done.returncode == 0, done.stderr
    modules = done.stdout.split()
    assert "portguard.commands.generator" in modules
    assert heavy(done.stdout) == []
    # The fast reader is what keeps the generator quick: it needs no node tree or dataclasses.
    slow = {"portguard.registry.model", "portguard.registry.lint", "dataclasses", "pathlib"}
    if reader == "fast":
        assert slow.isdisjoint(modules)
        # Exactly what the boot path loads of ours; the layer packages' __init__s are empty.
        assert {m for m in modules if m.startswith("portguard")} == FAST_PATH_MODULES
        assert len(setup.written()) == 2
    else:
        assert slow <= set(modules)
        assert len(setup.written()) == (2 if reader == "full" else 0)
        assert setup.log_lines() == ([] if reader == "full" else [setup.log_lines()[0]])


@needs_root
def test_the_import_check_sees_a_heavy_import(setup: Setup) -> None:
    """The harness above would notice pyroute2: the same child, made to import it first."""
    setup.write(THREE_MODES)

    done = run_entry(setup, extra="import portguard.host.sockets; ")

    assert done.returncode == 0, done.stderr
    assert "pyroute2" in " ".join(heavy(done.stdout))


def listing(top: Path, *skip: Path) -> list[tuple[str, int]]:
    """Every path under TOP but SKIP, with its modification time."""
    return sorted(
        (str(p), p.lstat().st_mtime_ns)
        for p in top.rglob("*")
        if not any(p.is_relative_to(s) for s in skip)
    )


@needs_root
@pytest.mark.parametrize("reader", ["fast", "full", "broken"])
def test_nothing_is_written_outside_the_output_directory(
    setup: Setup, tmp_path: Path, reader: str
) -> None:
    setup.write({"fast": THREE_MODES, "full": DECLINED, "broken": BROKEN["overlap"][0]}[reader])
    cache = Path("/run/portguard")
    cache_before = sorted(cache.iterdir()) if cache.exists() else None
    src_before = listing(SRC)
    before = listing(tmp_path, setup.out, setup.kmsg)

    done = run_entry(setup, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert listing(tmp_path, setup.out, setup.kmsg) == before
    assert listing(SRC) == src_before  # no byte-code written either
    assert (sorted(cache.iterdir()) if cache.exists() else None) == cache_before
    assert len(setup.written()) == {"fast": 2, "full": 2, "broken": 0}[reader]


def test_the_entry_script_exits_zero_when_portguard_cannot_be_imported(tmp_path: Path) -> None:
    package = tmp_path / "portguard"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('no yaml here')\n")

    done = subprocess.run(
        [PYTHON, "-B", str(ENTRY), str(tmp_path / "out")],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert done.returncode == 0
    assert done.stderr == "<3>portguard-generator: cannot start: ImportError: no yaml here\n"
    assert not (tmp_path / "out").exists()


def test_the_entry_script_is_executable_and_runs_isolated() -> None:
    assert os.access(ENTRY, os.X_OK)
    assert ENTRY.read_text().splitlines()[0] == "#!/usr/bin/python3 -IB"


# --- the fast reader never vouches for what lint rejects -------------------------------------


def full_units(main: Path, dropins: list[Path] | None = None) -> list[fastreader.Unit] | None:
    """The full reader's units, or None when lint finds an error."""
    loaded = load(RegistrySource(main, tuple(dropins or ())))
    if any(f.severity == "error" for f in check_registry(loaded, None)):
        return None
    return [(e.name, e.mode.value, str(e.location)) for e in loaded.registry.units.values()]


def agree(main: Path, dropins: list[Path] | None = None) -> list[fastreader.Unit] | None:
    """The fast reader's answer, after checking it against the full reader's."""
    fast = fastreader.read(str(main), [str(d) for d in dropins or ()])
    if fast is not None:
        assert fast == full_units(main, dropins), main.read_text()
    return fast


@pytest.mark.parametrize("path", sorted(RULES.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_fast_reader_agrees_with_lint_on_every_rule_example(path: Path) -> None:
    fast = agree(path)
    if not path.stem.startswith(("good-", "overlap-self")):
        assert fast is None


@pytest.mark.parametrize(
    "path",
    [DATA / "design-example.yaml", EXAMPLE_REGISTRY],
    ids=lambda p: p.name,
)
def test_the_fast_reader_takes_the_usual_registries(path: Path) -> None:
    fast = agree(path)
    assert fast is not None
    assert [name for name, _, _ in fast] == ["myapp.service", "nginx.service", "redis@.service"]


def test_the_fast_reader_across_files(tmp_path: Path) -> None:
    main = tmp_path / "registry.yaml"
    main.write_text("version: 1\ndefaults:\n  mode: audit\n")
    one, two = tmp_path / "1.yaml", tmp_path / "2.yaml"
    one.write_text("version: 1\nunits:\n  a.service:\n    listen: [80]\n")
    two.write_text("version: 1\ndefaults: {mode: warn}\nunits:\n  b.service: {listen: [81]}\n")

    assert agree(main, [one, two]) == [
        ("a.service", "audit", f"{one}:3:3"),
        ("b.service", "warn", f"{two}:4:3"),
    ]
    two.write_text("version: 1\nunits:\n  b.service: {listen: [80/udp, 127.0.0.1:80]}\n")
    assert agree(main, [one, two]) is None  # b shares a.service's port 80/tcp: lint decides


@pytest.mark.parametrize(
    ("listens", "vouched"),
    [
        (["10.0.0.1:443/tcp", "10.0.0.2:443/tcp"], True),  # distinct addresses: no overlap
        (["'[::1]:443/tcp'", "'[2001:db8::1]:443/tcp'"], True),
        (["10.0.0.1:443/tcp", "'[::1]:443/tcp'"], True),  # IPv4 and IPv6 never meet
        (["10.0.0.1:443/tcp", "10.0.0.1:443/udp"], True),
        (["10.0.0.1:443/tcp", "10.0.0.1:443/tcp"], False),  # the same address: lint decides
        (["'[::1]:443/tcp'", "'[0::1]:443/tcp'"], False),  # the same, written apart
        (["10.0.0.1:443/tcp", "443/tcp"], False),  # a wildcard meets every address
        (["10.0.0.1:443/tcp", "0.0.0.0:443/tcp"], False),
        (["'[::1]:443/tcp'", "'[::]:443/tcp'"], False),
        (["10.0.0.1:440-450/tcp", "10.0.0.2:443/tcp"], True),
        (["10.0.0.1:440-450/tcp", "10.0.0.1:445/tcp"], False),
    ],
)
def test_the_fast_reader_vouches_for_a_shared_port_at_distinct_addresses(
    tmp_path: Path, listens: list[str], vouched: bool
) -> None:
    """Issue 13, Seen 11: 2,000 units on port 443 at distinct addresses went to the full
    reader at every boot; the fast reader now judges them, and agrees with lint."""
    path = tmp_path / "registry.yaml"
    lines = ["version: 1", "units:"]
    for n, listen in enumerate(listens):
        lines += [f"  u{n}.service:", f"    listen: [{listen}]"]
    path.write_text("\n".join(lines) + "\n")
    assert (agree(path) is not None) is vouched


SOCKET = ("web.socket", "80/tcp", "")
SERVICE = ("web.service", "80/tcp", "web.socket")
THIRD = [("a.service", "80/tcp", "c.socket"), ("b.service", "80/tcp", "c.socket")]


@pytest.mark.parametrize(
    ("units", "vouched"),
    [
        # A socket unit and the service it starts, on one port: lint passes them.
        ([SOCKET, SERVICE], True),
        ([("web.socket", "80/tcp", "web.service"), ("web.service", "80/tcp", "")], True),
        ([("web.socket", "127.0.0.1:80/tcp", ""), SERVICE], True),
        # A third unit on the port is no one's `via`: lint's overlap error.
        ([SOCKET, SERVICE, ("other.service", "80/tcp", "")], False),
        ([("a.service", "80/tcp", "c.service"), ("b.service", "80/tcp", "")], False),
        # Both list a third unit: a and b themselves still collide.
        ([*THIRD, ("c.socket", "80/tcp", "")], False),
    ],
)
def test_the_fast_reader_vouches_for_units_joined_by_via(
    tmp_path: Path, units: list[tuple[str, str, str]], vouched: bool
) -> None:
    """Issue 15: a registry of socket/service pairs went to the full reader at every boot."""
    path = tmp_path / "registry.yaml"
    lines = ["version: 1", "units:"]
    for name, listen, via in units:
        lines += [f"  {name}:", f"    listen: [{listen}]"] + ([f"    via: [{via}]"] * bool(via))
    path.write_text("\n".join(lines) + "\n")
    assert (agree(path) is not None) is vouched


def test_the_fast_reader_follows_via_across_files(tmp_path: Path) -> None:
    main = tmp_path / "registry.yaml"
    main.write_text("version: 1\nunits:\n  web.socket: {listen: [80]}\n")
    dropin = tmp_path / "web.yaml"
    dropin.write_text("version: 1\nunits:\n  web.service: {listen: [80], via: [web.socket]}\n")
    assert agree(main, [dropin]) is not None
    dropin.write_text("version: 1\nunits:\n  web.service: {listen: [80]}\n")
    assert agree(main, [dropin]) is None


# Fragments, most of them tricky, from which registries are built.
NAMES = ["a.service", "b.service", "t@.service", "c.socket", "'q.service'", "x.target",
         "bad name.service", "@x.service", "a@b.service", "<<", "\"a.service\""]  # fmt: skip
LISTENS = ["8080", "8080/tcp", "8080/udp", "8081/TCP", "127.0.0.1:8080/tcp", "'[::1]:8080/tcp'",
           "0.0.0.0:8082", "'[::]:8082/tcp'", "9000-9010/tcp", "9010-9000", "'%i/tcp'", "0",
           "65536", "65535/udp", "224.0.0.1:5000/tcp", "224.0.0.1:5000/udp", "'[ff02::1]:80/tcp'",
           "'[ff02::1]:80/udp'", "080", "1:80", "0x50", "8_080", "80.0", "true", "~", "''",
           "255.255.255.255:67/tcp", "255.255.255.255:67/udp", "010.0.0.1:80",
           "'[fe80::1%eth0]:80'",
           "{port: 8083, v6only: true}", "{port: '[::]:8084/tcp', v6only: yes}", "{v6only: true}",
           "{port: 9000-9010/udp, pool: true}", "{port: 9000-9010, pool: yes, min-free: 11}",
           "{port: 9000-9010, pool: true, min-free: 12}", "{port: 9000-9010, min-free: 1}",
           "{port: '%i/udp', pool: true}", "{port: 8080, pool: false, min-free: 0x1}",
           "{port: 9000-9010, pool: true, min-free: 0}", "{port: 9000-9010, pool: 1}",
           "{port: 8085, reuseport: maybe}", "{port: 8086, port: 8087}", "[8088]",
           "!!str 8089", "!!int 8091/tcp", "!!float 8092", "&anchor 8090", "*anchor",
           "'127.0.0.1:%i/tcp'"]  # fmt: skip
VALUES = {
    "mode": ["enforce", "warn", "audit", "Enforce", "'warn'", "yes", "~", "!!int warn",
             "!!str warn"],
    "wait": ["10s", "10", "1min 30s", "0x10", "1.5", "infinity", "-1", "010", "'5'", "1_0",
             "!!null 10s", "!!float 10"],
    "owner": ["team", "''", "' '", "2024-01-01", "123", "'123'", "!!binary aGk=", "&a team", "*a"],
    "description": ["text", "null", "[a]", "!!python/name:os.system x"],
    "via": ["[a.service]", "[]", "[x.target]", "[bad name]", "a.service", "[1]", "~"],
    "v6only": ["true", "no", "'true'", "1", "!!bool maybe", "!!bool true"],
    "reuseaddr": ["false", "on"],
    "bogus": ["1"],
}  # fmt: skip


@st.composite
def registries(draw: st.DrawFn) -> str:
    version = draw(st.sampled_from(["1", "1", "1", "'1'", "1.0", "2", None]))
    lines = [f"version: {version}"] if version is not None else []
    if draw(st.booleans()):
        lines.append("defaults:")
        for key in draw(st.lists(st.sampled_from(["mode", "wait", "owner", "v6only"]), max_size=2)):
            lines.append(f"  {key}: {draw(st.sampled_from(VALUES[key]))}")
        if lines[-1] == "defaults:":
            lines[-1] = "defaults: ~"
    if draw(st.booleans()):
        lines.append("units:")
        for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4)):
            lines.append(f"  {name}:")
            keys = draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=3))
            if draw(st.integers(0, 9)):
                keys.insert(draw(st.integers(0, len(keys))), "listen")
            for key in keys:
                if key == "listen":
                    listens = draw(st.lists(st.sampled_from(LISTENS), max_size=3))
                    if draw(st.booleans()):
                        lines.append(f"    listen: [{', '.join(listens)}]")
                    else:
                        lines.append("    listen:")
                        lines += [f"      - {item}" for item in listens] or ["      ~"]
                else:
                    lines.append(f"    {key}: {draw(st.sampled_from(VALUES[key]))}")
    return "\n".join(lines) + "\n"


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=registries())
def test_the_fast_reader_never_vouches_for_what_lint_rejects(tmp_path: Path, text: str) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    agree(path)


def test_the_generated_registries_reach_both_answers(tmp_path: Path) -> None:
    """The property above is only worth something if the fast reader both takes and declines."""
    answers = set()

    @settings(max_examples=500, deadline=None, database=None, derandomize=True)
    @given(text=registries())
    def sample(text: str) -> None:
        path = tmp_path / "registry.yaml"
        path.write_text(text)
        answers.add((fastreader.read(str(path), []) is None, full_units(path) is None))

    sample()
    assert {(False, False), (True, True), (True, False)} <= answers


# --- the unit files: the guard binds as the unit will, or the unit is not guarded ----------


def test_the_guard_takes_on_the_units_user_and_runs_outside_its_exec_sandbox(setup: Setup) -> None:
    """redis-server.service as Debian ships it: the guard must run although NoExecPaths=/."""
    setup.unit("redis-server.service", """
        [Service]
        Type=notify
        ExecStart=/usr/bin/redis-server /etc/redis/redis.conf --supervised systemd --daemonize no
        User=redis
        Group=redis
        NoExecPaths=/
        ExecPaths=/usr/bin/redis-server /usr/lib /lib
        CapabilityBoundingSet=
        PrivateUsers=true
        RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
    """)  # fmt: skip
    setup.write("version: 1\nunits:\n  redis-server.service:\n    listen: [6379]\n")

    assert setup.run() == 0

    assert directives(setup.dropin("redis-server.service")) == [
        "[Service]", "ExecStartPre=+/usr/bin/portguard check --user redis"
    ]  # fmt: skip
    assert setup.log_lines() == []


def test_a_drop_in_of_the_unit_changes_what_the_guard_mirrors(setup: Setup) -> None:
    setup.unit("web.service", "[Service]\nExecStart=/usr/sbin/web\nUser=www-data\n")
    setup.unit("web.service.d/caps.conf", "[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n")
    setup.write("version: 1\nunits:\n  web.service:\n    listen: [80]\n")

    assert setup.run() == 0

    line = directives(setup.dropin("web.service"))[1]
    assert line == "ExecStartPre=+/usr/bin/portguard check --user www-data --caps net_bind_service"


@pytest.mark.parametrize(
    ("fragment", "reason"),
    [
        (None, "web.service: not guarded: no unit file on disk"),
        ("[Service]\nExecStart=/bin/a\nExecStart=!/bin/b\nType=oneshot\n",
         "web.service: not guarded: its ExecStart= lines run with different identities"),
        ("[Service]\nExecStart=/bin/a\nUser=%i\n",
         "web.service: not guarded: User=%i uses a specifier"),
    ],
)  # fmt: skip
def test_a_unit_the_guard_cannot_mirror_is_left_unguarded_and_says_why(
    setup: Setup, fragment: str | None, reason: str
) -> None:
    if fragment is not None:
        setup.unit("web.service", fragment)
    else:
        setup.units.mkdir(parents=True, exist_ok=True)
        (setup.units / "web.service").mkdir()  # a directory stops write() making a fragment
    setup.write(THREE_MODES)
    if fragment is None:
        (setup.units / "web.service").rmdir()

    assert setup.run() == 0

    assert not (setup.out / "web.service.d").exists()
    assert (setup.out / "batch.service.d" / DROPIN_NAME).exists()  # the others are guarded
    (line,) = setup.log_lines()
    assert line.startswith("<4>portguard-generator[")
    assert reason in line


def test_a_unit_only_another_generator_wrote_is_not_guarded(setup: Setup) -> None:
    """Generators run side by side: another one's output may not be there yet."""
    generated = setup.units.parent.parent.parent.parent / "run/systemd/generator/web.service"
    generated.parent.mkdir(parents=True)
    generated.write_text(PLAIN_SERVICE)
    setup.units.mkdir(parents=True, exist_ok=True)
    (setup.units / "web.service").mkdir()
    setup.write(THREE_MODES)
    (setup.units / "web.service").rmdir()

    assert setup.run() == 0

    assert not (setup.out / "web.service.d").exists()
    assert (
        "web.service: not guarded: no unit file on disk (written by another generator"
        in (setup.log_lines()[0])
    )


def test_an_anchor_defined_twice_is_refused_by_both_readers(setup: Setup) -> None:
    """YAML's composer refuses a duplicate anchor; the fast reader, which never composes,
    must not vouch for it, or the generator would guard units `check` then refuses."""
    path = setup.write("""
        version: 1
        units:
          a.service: &x {listen: [8080]}
          b.service: &x {listen: [8081]}
    """)
    assert fastreader.read(str(path), []) is None

    assert setup.run() == 0

    assert setup.written() == []
    (line,) = setup.log_lines()
    assert "registry invalid" in line and "anchor" in line


def test_a_v4_mapped_address_goes_to_the_full_reader(setup: Setup) -> None:
    path = setup.write("""
        version: 1
        units:
          a.service:
            listen: [{port: "[::ffff:127.0.0.1]:8080/tcp", v6only: true}]
    """)
    assert fastreader.read(str(path), []) is None
    assert setup.run() == 0
    assert setup.written() == []
    assert "IPv4-mapped" in setup.log_lines()[0]

"""Unit files on disk, read as systemd reads them: the fragment and its drop-ins.

The generator cannot ask systemd (it runs before systemd loads any unit), and `dropin --root`
reads an image that is not running, so the guard learns how a unit starts from its files:
the search path and precedence of systemd.unit(5) (`systemd-analyze unit-paths`), the
fragment (an instance falls back to its template), then every `*.conf` of the drop-in
directories -- the unit's own, its template's, its name prefixes' (`a-b-.service.d`) and
its type's (`service.d`) -- where a file name in a higher directory hides the same name in
a lower one, and all are applied in the lexical order of their names.

Builtins and os only: the generator imports this at boot. Values are kept raw, in order, per
section and key; what a key means (a list that an empty assignment resets, a last-wins
setting) is the caller's to apply.
"""

import os

from portguard.errors import Refused

# systemd-analyze unit-paths, system scope, highest precedence first (Debian 12 adds
# /lib/systemd/system before /usr/lib; a merged /usr makes them one directory).
SEARCH_PATH = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
)
# Written by generators, which systemd runs in parallel: the portguard generator cannot rely
# on another one's output being there yet, and names the unit as not found instead.
GENERATED = (
    "/run/systemd/generator.early",
    "/run/systemd/generator",
    "/run/systemd/generator.late",
)
_CHUNK = 16384
_READ_LIMIT = 1 << 20

# (section, key) -> raw values in the order systemd applies them.
Settings = dict[tuple[str, str], list[str]]


class UnitFileError(Refused):
    """The unit's configuration cannot be read from disk; the message says why."""


def search_path(root: str = "/") -> list[str]:
    """The search path inside ROOT, each directory once (by its real path)."""
    seen: set[str] = set()
    paths = []
    for directory in SEARCH_PATH:
        path = os.path.join(root, directory.lstrip("/"))
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            paths.append(path)
    return paths


def _names(unit: str) -> tuple[list[str], list[str]]:
    """The names a fragment may have, and the drop-in directory names, most specific first."""
    stem, _, suffix = unit.rpartition(".")
    prefix, at, instance = stem.partition("@")
    fragments = [unit]
    dropins = [unit]
    if at and instance:
        template = f"{prefix}@.{suffix}"
        fragments.append(template)
        dropins.append(template)
    # a-b-c.service reads a-b-.service.d and a-.service.d too (systemd 246 and later).
    parts = prefix.split("-")
    for count in range(len(parts) - 1, 0, -1):
        dropins.append("-".join(parts[:count]) + "-." + suffix)
    dropins.append(suffix)  # service.d: every service
    return fragments, dropins


class UnitFiles:
    """The unit search path below ROOT, each directory listed once, so that finding many
    units' files costs a set lookup each rather than a stat per directory (the generator
    reads every registered unit's files at each boot). GENERATED=False: a fragment that only
    a generator wrote counts as missing (the portguard generator runs beside the others)."""

    def __init__(self, root: str = "/", *, generated: bool = True) -> None:
        self.paths = search_path(root)
        skipped = {os.path.join(root, g.lstrip("/")) for g in GENERATED} if not generated else ()
        self.skipped = frozenset(skipped)
        self.names: dict[str, frozenset[str]] = {}
        # Symbolic links, from the directory entries' types: only these can be masks.
        self.links: set[str] = set()
        for directory in self.paths:
            try:
                with os.scandir(directory) as entries:
                    listed = list(entries)
            except OSError:
                listed = []
            self.names[directory] = frozenset(e.name for e in listed)
            self.links.update(e.path for e in listed if e.is_symlink())
        # Every drop-in directory's name on the path: most units have none.
        self.dropin_dirs = frozenset(
            n for names in self.names.values() for n in names if n.endswith(".d")
        )

    def locate(self, unit: str) -> tuple[str, list[str]]:
        """The unit's fragment and its drop-ins in the order systemd applies them; raises
        UnitFileError when there is no fragment, or it is masked."""
        fragments, dropin_names = _names(unit)
        found = next(((d, n) for n in fragments for d in self.paths if n in self.names[d]), None)
        if found is None or found[0] in self.skipped:
            where = "written by another generator, " if found else ""
            raise UnitFileError(f"{unit}: no unit file on disk ({where}not readable before boot)")
        fragment = os.path.join(*found)
        if fragment in self.links and _masked(fragment):
            raise UnitFileError(f"{unit}: masked")
        chosen: dict[str, str] = {}
        dropin_names = [n for n in dropin_names if f"{n}.d" in self.dropin_dirs]
        for directory in self.paths if dropin_names else ():
            present = self.names[directory]
            for name in dropin_names:
                if f"{name}.d" not in present:
                    continue
                folder = os.path.join(directory, f"{name}.d")
                try:
                    entries = os.listdir(folder)
                except OSError:
                    continue
                for entry in entries:
                    if entry.endswith(".conf") and entry not in chosen:
                        chosen[entry] = os.path.join(folder, entry)
        dropins = [chosen[name] for name in sorted(chosen)]
        return fragment, [d for d in dropins if not _masked(d)]

    def read_settings(self, unit: str) -> Settings:
        """Every assignment of the unit's fragment and drop-ins, in systemd's order."""
        fragment, dropins = self.locate(unit)
        settings: Settings = {}
        for path in (fragment, *dropins):
            for section, key, value in parse(_read(path)):
                settings.setdefault((section, key), []).append(value)
        return settings


def is_transient(unit: str, root: str = "/") -> bool:
    """Whether UNIT was made at run time (`systemd-run`, a program over D-Bus): systemd keeps
    its file in /run/systemd/transient, and `systemctl disable` has nothing to act on."""
    return os.path.isfile(os.path.join(root, "run/systemd/transient", unit))


def _masked(path: str) -> bool:
    """A unit file or drop-in linked to /dev/null (`systemctl mask`)."""
    try:
        return os.path.islink(path) and os.readlink(path) == "/dev/null"
    except OSError:
        return False


def read_settings(unit: str, root: str = "/", *, generated: bool = True) -> Settings:
    """UnitFiles(root).read_settings(unit), for one unit."""
    return UnitFiles(root, generated=generated).read_settings(unit)


def _read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Small reads: a read of the whole limit allocates (and maps) 1 MiB every time.
            chunks = [os.read(fd, _CHUNK)]
            while len(chunks[-1]) == _CHUNK and len(chunks) * _CHUNK < _READ_LIMIT:
                chunks.append(os.read(fd, _CHUNK))
            data = b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UnitFileError(f"{path}: {exc.strerror}") from None
    if len(data) >= _READ_LIMIT:
        raise UnitFileError(f"{path}: larger than {_READ_LIMIT} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnitFileError(f"{path}: not UTF-8") from None


def parse(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of each assignment, as systemd's parser reads a unit file: `#`
    and `;` comment lines, a trailing backslash joins the next line (a comment line inside
    the continuation is skipped), whitespace around `=` and the value is dropped."""
    found = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if pending and line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        if equals:
            found.append((section, key.strip(), value.strip()))
    return found

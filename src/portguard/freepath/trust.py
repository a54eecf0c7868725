"""The registry's files, and whether root alone could have written them: a registry decides
which services may start, so `check`, the generator and the compiled form all trust it by
this one walk, over the whole resolved path of every file. The path operations it needs are
written over the builtin `posix`: importing `os` would cost the free path a tenth of the
interpreter's start."""

import posix
from _blake2 import blake2b

REGISTRY_DIR = "/etc/portguard"


def registry_files(root: str) -> list[str]:
    """registry.yaml, then registry.d/*.yaml in lexical order (hidden files skipped)."""
    dropin_dir = join(root, "registry.d")
    try:
        names = sorted(n for n in posix.listdir(dropin_dir) if n.endswith(".yaml") and n[0] != ".")
    except OSError:
        names = []
    dropins = [join(dropin_dir, n) for n in names]
    main = join(root, "registry.yaml")
    return [main, *dropins] if exists(main) or not dropins else dropins


def is_safe(st: posix.stat_result) -> bool:
    """Root's and writable by root alone: a registry decides which services may start."""
    mode = st.st_mode
    return st.st_uid == 0 and not mode & 0o002 and not (mode & 0o020 and st.st_gid != 0)


def first_unsafe(paths: list[str]) -> str | None:
    """The first place a user other than root could change on the way to any of PATHS that
    exists: the path itself, or a directory from / down to it, symbolic links resolved (as
    sshd's StrictModes walks). A world-writable directory may be on the way only when it is
    sticky and root's, so that only root can replace what is in it (/tmp). Check, the
    generator and the cache agree on it."""
    judged: dict[str, bool] = {}
    for path in paths:
        try:
            real = realpath(path)
        except FileNotFoundError:
            continue
        except OSError:
            return path  # a path that cannot be followed cannot be vouched for
        places = [real]
        while places[-1] != "/":
            places.append(places[-1].rpartition("/")[0] or "/")
        for index, place in enumerate(reversed(places)):
            last = index == len(places) - 1
            if not last and judged.get(place):
                continue
            try:
                st = posix.stat(place)
            except OSError:
                return place
            sticky_root_dir = not last and st.st_uid == 0 and st.st_mode & 0o1000
            if not (is_safe(st) or sticky_root_dir):
                return path if place == real else place
            judged[place] = True
    return None


def distrust(path: str) -> str:
    """Why PATH is refused, with the fix: the one wording of check's error and the generator's."""
    return (
        f"{path}: writable by a user other than root, so it is not trusted "
        f"(fix: chown root:root {path}; chmod go-w {path})"
    )


def digest(root: str) -> tuple[bytes, list[str]] | None:
    """A hash of the registry's names and contents; None when a file is missing or unsafe."""
    files = registry_files(root)
    hashed = blake2b(digest_size=32)
    if first_unsafe([root, join(root, "registry.d"), *files]) is not None:
        return None
    for path in files:
        data = read_trusted(path)
        if data is None:
            return None
        hashed.update(path.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return hashed.digest(), files


def read_trusted(path: str) -> bytes | None:
    """The file's bytes if it is root's and writable by root alone, else None."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        # fstat of the opened file: no window for a swap between the check and the read.
        if not is_safe(posix.fstat(fd)):
            return None
        chunks = []
        while chunk := posix.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        posix.close(fd)


# --- path operations without `os` ----------------------------------------------------------


def join(directory: str, name: str) -> str:
    """os.path.join of a directory and a plain name."""
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def exists(path: str) -> bool:
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def is_dir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except (OSError, ValueError):
        return False


def normpath(path: str) -> str:
    """os.path.abspath without `os`: absolute, with no empty, `.` or `..` parts."""
    if not path.startswith("/"):
        path = f"{posix.getcwd()}/{path}"
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def realpath(path: str) -> str:
    """os.path.realpath(PATH, strict=True) without `os`: every symbolic link resolved, as the
    kernel follows them; raises FileNotFoundError for a missing part, OSError for any other
    failure (a part that is not a directory, a loop), as stat(2) of PATH would."""
    if not path.startswith("/"):
        path = f"{posix.getcwd()}/{path}"
    resolved = ""  # the real path so far, "" for /
    todo = [part for part in reversed(path.split("/")) if part]
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            resolved = resolved.rpartition("/")[0]
            continue
        candidate = f"{resolved}/{part}"
        kind = posix.lstat(candidate).st_mode & 0o170000
        if kind != 0o120000:  # not a symbolic link
            if todo and kind != 0o040000:  # as the kernel: only a directory has parts
                raise NotADirectoryError(20, "Not a directory", path)  # ENOTDIR
            resolved = candidate
            continue
        links += 1
        if links > 40:  # the kernel's own limit on links followed in one lookup
            raise OSError(40, "Too many levels of symbolic links", path)  # ELOOP
        target = posix.readlink(candidate)
        if target.startswith("/"):
            resolved = ""
        todo.extend(part for part in reversed(target.split("/")) if part)
    return resolved or "/"

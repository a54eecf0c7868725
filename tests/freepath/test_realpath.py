"""Path operations without `os` (freepath/trust.py), against the kernel and os.path."""

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portguard.freepath import trust

# --- trust walks the whole resolved path ------------------------------------------------------

# A small tree of directories, files and symbolic links (relative, absolute, dangling, through
# `..`, in loops), then every name in it resolved both ways.
LINK_TARGETS = ["d", "d/f", "../d", "./d/e", "/", "x/../d", "missing", "d/f/g", "l0", "l1",
                "l2", "e/..", "d//e/", "..", "."]  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(links=st.lists(st.sampled_from(LINK_TARGETS), min_size=1, max_size=3),
       lookups=st.lists(st.sampled_from(["l0", "l1", "l2", "d", "d/e", "l0/e", "l1/../d",
                                          "l2/f", "d/../l0", "l0/f/x", "nope/x"]),
                        min_size=1, max_size=4))  # fmt: skip
# A file's `..`: the kernel says ENOTDIR (Debian 13's autopkgtest found the difference).
@example(links=["d", "d/f"], lookups=["l1/../d", "l1/x"])
def test_realpath_resolves_as_the_kernel_does(
    tmp_path_factory: pytest.TempPathFactory, links: list[str], lookups: list[str]
) -> None:
    top = tmp_path_factory.mktemp("links")
    (top / "d" / "e").mkdir(parents=True)
    (top / "d" / "f").write_text("")
    for i, target in enumerate(links):
        (top / f"l{i}").symlink_to(target if not target.startswith("/") else str(top) + target)
    for name in lookups:
        path = f"{top}/{name}"
        # The kernel is the oracle for whether the path resolves (Python's realpath answered
        # ENOENT where stat(2) says ENOTDIR before 3.13); realpath for where it leads.
        try:
            os.stat(path)
            expected: str | type[BaseException] = os.path.realpath(path, strict=True)
        except OSError as exc:
            expected = FileNotFoundError if isinstance(exc, FileNotFoundError) else OSError
        try:
            got: str | type[BaseException] = trust.realpath(path)
        except OSError as exc:
            got = FileNotFoundError if isinstance(exc, FileNotFoundError) else OSError
        assert got == expected, (name, links)

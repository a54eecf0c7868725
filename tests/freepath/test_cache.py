"""The compiled form in /run/portguard (freepath/cache.py): written whole or not at all."""

import os
from pathlib import Path

import pytest

from portguard.freepath import cache


def test_a_full_run_leaves_no_temporary_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])  # ENOSPC half way, as a full tmpfs does

    monkeypatch.setattr(os, "write", full)
    assert cache.store_cache(str(tmp_path / "registry"), b"key", {"a.service": ()}) is False
    assert list(tmp_path.iterdir()) == []

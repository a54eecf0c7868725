"""`portguard check` as systemd runs it, on registries that must be refused, not crash on."""

from pathlib import Path

import pytest

from portguard.cli import main
from portguard.errors import Exit
from portguard.freepath import cache
from tests.conftest import stand_for_root


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The journal entries check sends, kept here: a test never writes to the host's journal."""
    entries: list[dict[str, str]] = []

    def keep(fields: dict[str, str]) -> None:
        entries.append(dict(fields))

    monkeypatch.setattr("portguard.host.journal.send", keep)
    return entries


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "portguard"
    root.mkdir(mode=0o755)
    stand_for_root(monkeypatch)
    monkeypatch.setattr(cache, "CACHE_DIR", str(tmp_path / "cache"))
    return root


def test_an_unbindable_claim_is_a_registry_error_not_an_internal_one(
    registry: Path, sent: list[dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A v4-mapped address with v6only: bind() can only say EINVAL; lint refuses it first."""
    (registry / "registry.yaml").write_text(
        "version: 1\nunits:\n  web.service:\n"
        '    listen: [{port: "[::ffff:127.0.0.1]:18080/tcp", v6only: true}]\n'
    )
    code = main(["check", "--registry", str(registry), "web.service"])
    err = capsys.readouterr().err
    assert code == Exit.CONFIG
    assert "IPv4-mapped address with v6only: true can never be bound" in err
    assert "internal error" not in err
    assert [e["PORTGUARD_VERDICT"] for e in sent] == ["config-error"]

"""`portguard init` as a user runs it: the registry on stdout, exit codes, its own bugs."""

import pytest

from portguard.cli import main
from portguard.commands import init as bootstrap
from portguard.policy.owners import CENSUS_FAILED
from tests.commands.test_init import MIXED


def init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_the_registry_and_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "capture_here", lambda: MIXED)
    code, out, err = init(capsys)

    assert code == 0
    assert err == ""
    assert out.startswith("# Written by 'portguard init' on web1")
    assert "\n  web.service:\n" in out


def test_output_that_would_not_lint_is_an_internal_error_with_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "capture_here", lambda: MIXED)
    monkeypatch.setattr(bootstrap, "render", lambda *_: "version: 1\nunits: [oops]\n")
    code, out, err = init(capsys)

    assert code == 70
    assert out == ""
    first, hint = err.splitlines()
    assert first.startswith("portguard: internal error: the registry written does not pass lint")
    assert "<generated registry>:2:8: error: 'units' must be a mapping" in first
    assert hint.startswith("portguard: hint: a portguard bug")


def test_a_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = init(capsys, "--bogus")
    assert code == 64
    assert out == ""
    assert "unrecognized arguments: --bogus" in err


def test_a_socket_table_that_cannot_be_read_is_unavailable_69_as_in_why_and_audit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from portguard.host import sockets  # noqa: PLC0415

    def refused() -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sockets, "listeners", refused)
    code, out, err = init(capsys)

    assert code == 69
    assert out == ""
    assert err.startswith(f"portguard: {CENSUS_FAILED}: [Errno 1] Operation not permitted")
    assert "bug" not in err

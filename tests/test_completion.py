"""Both shells' completions (packaging/portguard.bash-completion, .zsh-completion) in
real shells (tests/completers.py): bash plain and with bash-completion's helpers, and an
interactive zsh. Verbs, options and choices come from argparse, so an option added to the
CLI without its completion fails here; the fake `systemctl` and `ip` log their calls.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.cli_surface import choices, options, top_level_options, verbs
from tests.completers import BASH_COMPLETION, UNITS, BashCompleter, ZshCompleter

Completer = BashCompleter | ZshCompleter
MODES = ["bash", "bash-completion", "zsh"]


@pytest.fixture(params=MODES)
def complete(request: pytest.FixtureRequest, tmp_path: Path) -> Completer:
    mode: str = request.param
    shell = "zsh" if mode == "zsh" else "bash"
    reason = None
    if shutil.which(shell) is None:
        reason = f"needs {shell} (tools/setup installs it)"
    elif mode == "bash-completion" and not BASH_COMPLETION.exists():
        reason = f"needs {BASH_COMPLETION} (Debian package bash-completion)"
    if reason is not None:
        if os.environ.get("CI") == "true":  # CI must not turn green on a mode that did not run
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return ZshCompleter(tmp_path) if mode == "zsh" else BashCompleter(mode, tmp_path)


def test_verbs_without_running_anything(complete: Completer) -> None:
    assert complete("portguard ") == set(verbs())
    assert complete("portguard d") == {"dropin"}
    assert complete("portguard -") == top_level_options()
    assert complete.calls() == []


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_options_of_each_verb(complete: Completer, verb: str) -> None:
    assert complete(f"portguard {verb} -") == options(verbs()[verb])
    assert complete(f"portguard {verb} --") == {
        o for o in options(verbs()[verb]) if o.startswith("--")
    }
    assert complete.calls() == []


@pytest.mark.parametrize(("verb", "option", "values"), choices())
def test_values_of_options_with_choices(
    complete: Completer, verb: str, option: str, values: tuple[str, ...]
) -> None:
    assert complete(f"portguard {verb} {option} ") == set(values)
    assert complete(f"portguard {verb} {option}=") == set(values)
    for value in values:
        assert complete(f"portguard {verb} {option}={value[:2]}") == {
            v for v in values if v.startswith(value[:2])
        }
        # After the value, what the verb takes next: check's UNIT, nothing for the others.
        after = UNITS if verb == "check" else nothing_more(complete, verb, "--json", option)
        assert complete(f"portguard {verb} --json {option} {value} ") == after


def test_dropin_completes_services_and_sockets(complete: Completer) -> None:
    assert complete("portguard dropin ") == UNITS
    assert complete("portguard dropin web") == {"web.service", "web.socket"}
    assert complete("portguard dropin --reload web.service redis") == {
        "redis@.service",
        "redis@6379.service",
    }
    assert any("list-unit-files" in call for call in complete.calls())


def test_dropin_remove_completes_the_units_portguard_guarded(
    complete: Completer, tmp_path: Path
) -> None:
    units = tmp_path / "image" / "etc" / "systemd" / "system"
    for unit, first in (("a.service", "# portguard guard drop-in for a.service"),
                        ("b.service", "[Service]")):  # fmt: skip
        (units / f"{unit}.d").mkdir(parents=True)
        (units / f"{unit}.d" / "50-portguard.conf").write_text(f"{first}\n")
    assert complete(f"portguard dropin --root {tmp_path}/image --remove ") == {"a.service"}
    assert complete(f"portguard dropin --remove --root={tmp_path}/image ") == {"a.service"}
    assert complete.calls() == []


def test_check_completes_one_unit(complete: Completer) -> None:
    assert complete("portguard check web.") == {"web.service", "web.socket"}
    assert complete("portguard check web.service ") == nothing_more(complete, "check")


def nothing_more(complete: Completer, verb: str, *given: str) -> set[str]:
    """What a shell offers where VERB takes no more arguments: bash nothing; zsh, by its
    convention, the options not GIVEN yet."""
    if isinstance(complete, BashCompleter):
        return set()
    return options(verbs()[verb]) - set(given)


def test_why_netns_names_and_ports(complete: Completer) -> None:
    assert complete("portguard why --netns ") == {"blue", "red"}
    assert complete("portguard why --netns=b") == {"blue"}
    assert complete("portguard why 8080") == {"8080/tcp", "8080/udp"}
    assert complete("portguard why 8080/t") == {"8080/tcp"}
    assert complete("portguard why --address ") == set()
    assert complete("portguard why ") == set()
    assert complete.calls() == ["ip netns list", "ip netns list"]


def test_paths(complete: Completer, tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "registry.d").mkdir(parents=True)
    (files / "registry.yaml").touch()
    (files / "notes.txt").touch()
    # bash offers the whole path typed, zsh the names in the directory.
    shown = f"{files}/" if complete.full_paths else ""
    everything = {f"{shown}{name}" for name in ("registry.d", "registry.yaml", "notes.txt")}
    yaml_or_directory = everything - {f"{shown}notes.txt"}
    assert complete(f"portguard audit --output {files}/") == everything
    assert complete(f"portguard audit --output={files}/") == everything
    assert complete(f"portguard lint {files}/") == yaml_or_directory
    assert complete(f"portguard reserve --registry {files}/") == yaml_or_directory
    assert complete(f"portguard dropin --root {files}/") == {f"{shown}registry.d"}
    assert complete.calls() == []


def test_lint_ephemeral_range_offers_its_words(complete: Completer) -> None:
    assert complete("portguard lint --ephemeral-range ") == {"host", "none"}
    assert complete("portguard lint --ephemeral-range=h") == {"host"}
    assert complete("portguard init --") == {"--debug", "--help"}  # no --registry: none read
    assert complete.calls() == []


def test_wait_ports_and_unit(complete: Completer) -> None:
    assert complete("portguard wait 8080") == {"8080/tcp", "8080/udp"}
    assert complete("portguard wait 8080/tcp 53/u") == {"53/udp"}
    assert complete("portguard wait --unit web.") == {"web.service", "web.socket"}

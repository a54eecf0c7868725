"""packaging/portguard.bash-completion, driven in a real bash as readline would drive it.

Each case sets COMP_WORDS, COMP_CWORD, COMP_LINE and COMP_POINT, calls the function that
`complete -p portguard` names, and reads COMPREPLY: in plain bash, and again with the
bash-completion package's helpers loaded. Verbs, options and choices come from argparse,
so an option added to the CLI without its completion fails here. `systemctl` and `ip` are
fakes first on PATH that log their calls: no host state is used, and the test sees which
words ran a command.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_surface import choices, options, top_level_options, verbs
from tests.conftest import shipped

COMPLETION = shipped(
    "packaging/portguard.bash-completion", "/usr/share/bash-completion/completions/portguard"
)
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")

DRIVER = r"""
[[ $1 == bash-completion ]] && source /usr/share/bash-completion/bash_completion
source "$2"
COMP_LINE=$3
COMP_POINT=${#COMP_LINE}
shift 3
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
read -ra spec <<<"$(complete -p portguard)"
for i in "${!spec[@]}"; do [[ ${spec[i]} == -F ]] && function=${spec[i + 1]}; done
"$function" portguard "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
((${#COMPREPLY[@]} == 0)) || printf '%s\n' "${COMPREPLY[@]}"
"""

FAKE_SYSTEMCTL = r"""#!/bin/sh
echo "systemctl $*" >>"$FAKE_LOG"
case "$*" in
*list-unit-files*) cat <<'EOF'
web.service                 enabled  enabled
redis@.service              indirect enabled
web.socket                  enabled  enabled
backup.timer                enabled  enabled
EOF
;;
*list-units*) cat <<'EOF'
  web.service                                  loaded active running Web
● broken.service                               loaded failed failed  Broken
  redis@6379.service                           loaded active running Redis
  systemd-fsck@dev-disk-by\x2duuid-1.service   loaded active exited  fsck
EOF
;;
esac
"""
UNITS = {
    "web.service", "web.socket", "redis@.service", "broken.service", "redis@6379.service",
    r"systemd-fsck@dev-disk-by\x2duuid-1.service",
}  # fmt: skip

FAKE_IP = r"""#!/bin/sh
echo "ip $*" >>"$FAKE_LOG"
[ "$1 $2" = "netns list" ] && printf 'blue (id: 0)\nred\n'
"""


class Completer:
    """Completes command lines in one mode, with the fakes on PATH and a log of their calls."""

    def __init__(self, mode: str, home: Path) -> None:
        self.mode = mode
        fakes = home / "bin"
        fakes.mkdir()
        for name, script in (("systemctl", FAKE_SYSTEMCTL), ("ip", FAKE_IP)):
            (fakes / name).write_text(script)
            (fakes / name).chmod(0o755)
        self.log = home / "calls.log"
        self.log.touch()
        self.env = {"PATH": f"{fakes}:{os.environ['PATH']}", "HOME": str(home),
                    "FAKE_LOG": str(self.log), "LC_ALL": "C.UTF-8"}  # fmt: skip

    def __call__(self, line: str) -> set[str]:
        """COMPREPLY for LINE, completed at its end."""
        argv = ["bash", "--norc", "--noprofile", "-c", DRIVER, "bash", self.mode,
                str(COMPLETION), line, *comp_words(line)]  # fmt: skip
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
        assert done.returncode == 0 and not done.stderr, done.stderr
        return set(done.stdout.splitlines())

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


def comp_words(line: str) -> list[str]:
    """COMP_WORDS as bash splits LINE: at blanks, with `=` and `:` words of their own."""
    words = re.findall(r"[^\s=:]+|[=:]+", line)
    return [*words, ""] if not line or line[-1].isspace() else words


@pytest.fixture(params=["bash", "bash-completion"])
def complete(request: pytest.FixtureRequest, tmp_path: Path) -> Completer:
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    if request.param == "bash-completion" and not BASH_COMPLETION.exists():
        reason = f"needs {BASH_COMPLETION} (Debian package bash-completion)"
        if os.environ.get("CI") == "true":  # CI must not turn green on a mode that did not run
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return Completer(request.param, tmp_path)


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
        after = UNITS if verb == "check" else set()
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
    assert complete("portguard check web.service ") == set()


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
    everything = {f"{files}/{name}" for name in ("registry.d", "registry.yaml", "notes.txt")}
    yaml_or_directory = everything - {f"{files}/notes.txt"}
    assert complete(f"portguard audit --output {files}/") == everything
    assert complete(f"portguard audit --output={files}/") == everything
    assert complete(f"portguard lint {files}/") == yaml_or_directory
    assert complete(f"portguard reserve --registry {files}/") == yaml_or_directory
    assert complete(f"portguard dropin --root {files}/") == {f"{files}/registry.d"}
    assert complete.calls() == []


def test_lint_ephemeral_range_offers_its_words(complete: Completer) -> None:
    assert complete("portguard lint --ephemeral-range ") == {"host", "none"}
    assert complete("portguard lint --ephemeral-range=h") == {"host"}
    assert complete("portguard init --") == {"--debug", "--help"}  # no --registry: none read
    assert complete.calls() == []

"""packaging/portguard.zsh-completion, driven in a real interactive zsh as a user's TAB would.

Each case starts `zsh -f -i` on a pseudo-terminal, loads compinit with the completion first
on fpath, types the command line and a TAB. A `compadd` wrapper records the matches zsh
offers (after matching against what was typed, and unquoted: zsh keeps them as it would
insert them), and the completion's end exits the shell.
Verbs, options and choices come from argparse, as in the bash completion's test; the same
fake `systemctl` and `ip` log their calls, so no host state is used.
"""

import os
import pty
import select
import shutil
import time
from pathlib import Path

import pytest

from tests.cli_surface import choices, options, top_level_options, verbs
from tests.conftest import shipped
from tests.test_completion import FAKE_IP, FAKE_SYSTEMCTL, UNITS

COMPLETION = shipped(
    "packaging/portguard.zsh-completion", "/usr/share/zsh/vendor-completions/_portguard"
)
DONE = "<<portguard-completion-done>>"
SETUP = r"""
PROMPT='' RPROMPT=''
fpath=({functions} $fpath)
autoload -U compinit && compinit -u -D
zstyle ':completion:*' list-grouped false
compadd() {{
  if [[ ${{@[1,(i)(-|--)]}} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a __hits
  builtin compadd -A __hits "$@"
  (( $#__hits )) && print -rl -- "${{(Q)__hits[@]}}" >>{out}  # as typed, then unquoted
  builtin compadd "$@"
}}
_portguard_test_done() {{ print -r -- '{done}' >>{out}; exit }}
comppostfuncs=(_portguard_test_done)
bindkey '^I' complete-word
"""


class ZshCompleter:
    def __init__(self, home: Path) -> None:
        self.home = home
        functions = home / "functions"
        functions.mkdir()
        # zsh finds a completion by its file name, _portguard, as Debian installs it.
        shutil.copy(COMPLETION, functions / "_portguard")
        fakes = home / "bin"
        fakes.mkdir()
        for name, script in (("systemctl", FAKE_SYSTEMCTL), ("ip", FAKE_IP)):
            (fakes / name).write_text(script)
            (fakes / name).chmod(0o755)
        self.log = home / "calls.log"
        self.log.touch()
        self.out = home / "matches"
        self.setup = home / "setup.zsh"
        self.setup.write_text(SETUP.format(functions=functions, out=self.out, done=DONE))
        self.env = {"PATH": f"{fakes}:{os.environ['PATH']}", "HOME": str(home),
                    "FAKE_LOG": str(self.log), "LC_ALL": "C.UTF-8", "TERM": "dumb"}  # fmt: skip

    def __call__(self, line: str) -> set[str]:
        """The matches zsh offers for LINE, completed at its end."""
        self.out.write_text("")
        pid, terminal = pty.fork()
        if pid == 0:  # the child: an interactive zsh without any startup file
            os.execve(shutil.which("zsh") or "zsh", ["zsh", "-f", "-i"], self.env)
        screen = b""
        try:
            os.write(terminal, f"source {self.setup}\n{line}\t".encode())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ready, _, _ = select.select([terminal], [], [], 0.2)
                try:
                    chunk = os.read(terminal, 65536) if ready else b""
                except OSError:  # the shell exited: its terminal is gone
                    break
                screen += chunk
                if not ready and os.waitpid(pid, os.WNOHANG) != (0, 0):
                    pid = 0
                    break
            else:
                raise AssertionError(f"zsh did not finish completing {line!r}: {screen!r}")
        finally:
            os.close(terminal)
            if pid:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        matches = self.out.read_text().splitlines()
        assert matches and matches[-1] == DONE, f"{line!r}: {matches}, screen {screen!r}"
        return set(matches[:-1])

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def complete(tmp_path: Path) -> ZshCompleter:
    if shutil.which("zsh") is None:
        reason = "needs zsh (tools/setup installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return ZshCompleter(tmp_path)


def test_verbs_without_running_anything(complete: ZshCompleter) -> None:
    assert complete("portguard ") == set(verbs())
    assert complete("portguard d") == {"dropin"}
    assert complete("portguard -") == top_level_options()
    assert complete.calls() == []


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_options_of_each_verb(complete: ZshCompleter, verb: str) -> None:
    assert complete(f"portguard {verb} -") == options(verbs()[verb])
    assert complete.calls() == []


@pytest.mark.parametrize(("verb", "option", "values"), choices())
def test_values_of_options_with_choices(
    complete: ZshCompleter, verb: str, option: str, values: tuple[str, ...]
) -> None:
    assert complete(f"portguard {verb} {option} ") == set(values)
    assert complete(f"portguard {verb} {option}=") == set(values)


def test_units_for_check_and_dropin(complete: ZshCompleter) -> None:
    assert complete("portguard check ") == UNITS
    assert complete("portguard check web.") == {"web.service", "web.socket"}
    assert complete("portguard dropin --reload web.service redis") == {
        "redis@.service", "redis@6379.service",
    }  # fmt: skip
    assert any("list-unit-files" in call for call in complete.calls())


def test_dropin_remove_completes_the_units_portguard_guarded(
    complete: ZshCompleter, tmp_path: Path
) -> None:
    units = tmp_path / "image" / "etc" / "systemd" / "system"
    for unit, first in (("a.service", "# portguard guard drop-in for a.service"),
                        ("b.service", "[Service]")):  # fmt: skip
        (units / f"{unit}.d").mkdir(parents=True)
        (units / f"{unit}.d" / "50-portguard.conf").write_text(f"{first}\n")
    assert complete(f"portguard dropin --root {tmp_path}/image --remove ") == {"a.service"}
    assert complete(f"portguard dropin --remove --root={tmp_path}/image ") == {"a.service"}
    assert complete.calls() == []


def test_why_netns_names_and_ports(complete: ZshCompleter) -> None:
    assert complete("portguard why --netns ") == {"blue", "red"}
    assert complete("portguard why 8080") == {"8080/tcp", "8080/udp"}
    assert complete("portguard why 8080/t") == {"8080/tcp"}
    assert complete.calls() == ["ip netns list"]


def test_lint_files_and_its_range(complete: ZshCompleter, tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "registry.d").mkdir(parents=True)
    (files / "registry.yaml").touch()
    (files / "notes.txt").touch()
    assert complete(f"portguard lint {files}/") == {"registry.d", "registry.yaml"}
    assert complete("portguard lint --ephemeral-range ") == {"host", "none"}
    assert complete("portguard init --") == {"--debug", "--help"}  # no --registry: none read

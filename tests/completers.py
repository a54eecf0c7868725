"""Real shells completing portguard command lines, for tests/test_completion.py.

bash: each case sets COMP_WORDS, COMP_CWORD, COMP_LINE and COMP_POINT, calls the function
that `complete -p portguard` names, and reads COMPREPLY, as readline would drive it: in
plain bash, and with the bash-completion package's helpers loaded.

zsh: each case starts `zsh -f -i` on a pseudo-terminal, loads compinit with the completion
first on fpath, types the command line and a TAB. A `compadd` wrapper records the matches
zsh offers (after matching against what was typed, and unquoted: zsh keeps them as it would
insert them), and the completion's end exits the shell.

`systemctl` and `ip` are fakes first on PATH that log their calls: no host state is used,
and a test sees which words ran a command.
"""

import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import shipped

BASH_COMPLETION_FILE = shipped(
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


class _Shell:
    """A home with the fake commands first on PATH, and the log of their calls."""

    def __init__(self, home: Path) -> None:
        fakes = home / "bin"
        fakes.mkdir()
        for name, script in (("systemctl", FAKE_SYSTEMCTL), ("ip", FAKE_IP)):
            (fakes / name).write_text(script)
            (fakes / name).chmod(0o755)
        self.log = home / "calls.log"
        self.log.touch()
        self.env = {"PATH": f"{fakes}:{os.environ['PATH']}", "HOME": str(home),
                    "FAKE_LOG": str(self.log), "LC_ALL": "C.UTF-8"}  # fmt: skip

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


class BashCompleter(_Shell):
    """Completes command lines in bash (MODE: plain, or with bash-completion's helpers),
    with the fakes on PATH and a log of their calls."""

    full_paths = True  # a file is offered as the whole path typed

    def __init__(self, mode: str, home: Path) -> None:
        super().__init__(home)
        self.mode = mode

    def __call__(self, line: str) -> set[str]:
        """COMPREPLY for LINE, completed at its end."""
        argv = ["bash", "--norc", "--noprofile", "-c", DRIVER, "bash", self.mode,
                str(BASH_COMPLETION_FILE), line, *comp_words(line)]  # fmt: skip
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
        assert done.returncode == 0 and not done.stderr, done.stderr
        return set(done.stdout.splitlines())


def comp_words(line: str) -> list[str]:
    """COMP_WORDS as bash splits LINE: at blanks, with `=` and `:` words of their own."""
    words = re.findall(r"[^\s=:]+|[=:]+", line)
    return [*words, ""] if not line or line[-1].isspace() else words


ZSH_COMPLETION_FILE = shipped(
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


class ZshCompleter(_Shell):
    """Completes command lines in an interactive zsh on a pseudo-terminal."""

    full_paths = False  # a file is offered as its name in the directory typed

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.env["TERM"] = "dumb"
        functions = home / "functions"
        functions.mkdir()
        # zsh finds a completion by its file name, _portguard, as Debian installs it.
        shutil.copy(ZSH_COMPLETION_FILE, functions / "_portguard")
        self.out = home / "matches"
        self.setup = home / "setup.zsh"
        self.setup.write_text(SETUP.format(functions=functions, out=self.out, done=DONE))

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

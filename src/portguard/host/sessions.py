"""Login sessions from logind's state files: who, on which terminal, since when.

These are the files sd-login(3) itself reads (sd_session_get_tty() and friends), so they
answer without a bus, and also when logind's D-Bus API is slow or not running.
"""

from dataclasses import dataclass

from portguard.host.processes import read_text

SESSIONS_DIR = "/run/systemd/sessions"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user: str | None
    tty: str | None
    since: float | None  # seconds since the epoch
    remote_host: str | None
    service: str | None  # the PAM service that opened it: sshd, login, su, runuser-l, ...
    leader: int | None


def session_of_scope(scope: str) -> str | None:
    """`session-c3.scope` -> `c3`."""
    if scope.startswith("session-") and scope.endswith(".scope"):
        return scope.removeprefix("session-").removesuffix(".scope") or None
    return None


def session(session_id: str, directory: str = SESSIONS_DIR) -> Session | None:
    """The session SESSION_ID, or None when logind has no record of it."""
    if not session_id or "/" in session_id or session_id.startswith("."):
        return None
    values: dict[str, str] = {}
    for line in read_text(f"{directory}/{session_id}").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key] = value
    if not values:
        return None
    realtime = values.get("REALTIME", "")
    leader = values.get("LEADER", "")
    return Session(
        id=session_id,
        user=values.get("USER") or None,
        tty=values.get("TTY") or None,
        since=int(realtime) / 1_000_000 if realtime.isdigit() else None,
        remote_host=values.get("REMOTE_HOST") or None,
        service=values.get("SERVICE") or None,
        leader=int(leader) if leader.isdigit() else None,
    )

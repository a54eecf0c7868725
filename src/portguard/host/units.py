"""Unit facts from systemd over D-Bus. The only pystemd import; every call is bounded.

pystemd blocks without a timeout, and a bus that accepts but never answers holds the GIL
for 90 s, so no thread can bound it. The queries therefore run in a forked child that
answers through a pipe; when the deadline passes the child is killed (it is ours) and
the caller learns why the facts are missing.
"""

import json
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from portguard.errors import Unavailable

PRIVATE_BUS = "/run/systemd/private"
_DEST = b"org.freedesktop.systemd1"
_MANAGER_PATH = b"/org/freedesktop/systemd1"
_IFACE = "org.freedesktop.systemd1."


class FactsUnavailable(Unavailable):
    """systemd could not be asked; the message says why, for the report."""


class ReloadFailed(Unavailable):
    """systemd did not confirm a reload; the message says why."""


@dataclass(frozen=True, slots=True)
class UnitFacts:
    """What systemd says of a loaded unit."""

    name: str
    active_state: str
    sub_state: str
    main_pid: int | None = None
    triggers: tuple[str, ...] = ()  # a socket unit's service
    timeout_start_ms: int | None = None
    description: str | None = None
    triggered_by: tuple[str, ...] = ()  # a service's socket units

    @property
    def is_active(self) -> bool:
        """Running as meant to (a reload keeps its listeners): what `missing` is judged on."""
        return self.active_state in ("active", "reloading")

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "UnitFacts":
        return cls(
            name=data["name"],
            active_state=data["active_state"],
            sub_state=data["sub_state"],
            main_pid=data.get("main_pid") or None,
            triggers=tuple(data.get("triggers", ())),
            timeout_start_ms=data.get("timeout_start_ms"),
            description=data.get("description") or None,
            triggered_by=tuple(data.get("triggered_by", ())),
        )


def unit_facts(
    names: Sequence[str], *, timeout: float, patterns: Sequence[str] = ()
) -> dict[str, UnitFacts]:
    """Facts for each of NAMES that systemd knows, and for every loaded unit matching one of
    PATTERNS (`redis@*.service`: a template's instances); raises FactsUnavailable within TIMEOUT.
    """
    if not names and not patterns:
        return {}
    return _facts_of(_in_child(lambda: {"units": _query(names, patterns)}, timeout), timeout)


def _facts_of(answer: dict[str, Any] | None, timeout: float) -> dict[str, UnitFacts]:
    if answer is None:
        raise FactsUnavailable(f"systemd did not answer over D-Bus within {timeout:g}s")
    if "error" in answer:
        raise FactsUnavailable(answer["error"])
    return {name: UnitFacts.from_data(data) for name, data in answer["units"].items()}


class FactsChild:
    """unit_facts from a child forked before the question is known (`start`, when a port
    turns out busy): it loads the D-Bus library and connects to systemd on another CPU while
    the caller reads the socket table, then answers one question, within the caller's
    timeout as unit_facts does. A second question gets a child of its own. Use it as a
    context manager: a child never asked is ended with the block (it is ours to end)."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._request = self._answer = -1
        self._asked = False

    def __enter__(self) -> "FactsChild":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self) -> None:
        if self._pid is not None or self._asked:
            return
        request_read, self._request = os.pipe()
        self._answer, answer_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child; covered by the system tests
            os.close(self._request)
            os.close(self._answer)
            _serve(request_read, answer_write)
        self._pid = pid
        os.close(request_read)
        os.close(answer_write)

    def __call__(
        self, names: Sequence[str], *, timeout: float, patterns: Sequence[str] = ()
    ) -> dict[str, UnitFacts]:
        if self._asked:
            return unit_facts(names, timeout=timeout, patterns=patterns)
        if not names and not patterns:
            return {}
        self.start()
        self._asked = True
        deadline = time.monotonic() + timeout
        try:
            question = json.dumps({"names": list(names), "patterns": list(patterns)})
            _write_all(self._request, question.encode())
            os.close(self._request)
            self._request = -1
            payload = read_until(self._answer, deadline)
        except OSError:  # the child is gone: it could not take the question
            payload = None
        finally:
            self.close()
        return _facts_of(None if payload is None else dict(json.loads(payload)), timeout)

    def close(self) -> None:
        for fd in (self._request, self._answer):
            if fd >= 0:
                os.close(fd)
        self._request = self._answer = -1
        if self._pid is not None:
            reap(self._pid)
            self._pid = None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _serve(request: int, answer: int) -> None:  # pragma: no cover - child
    """The child of a FactsChild: connect, then answer the one question, if one comes."""
    try:
        bus = _open_bus()
        bus.open()
    except Exception as exc:  # told to the caller with its question's answer
        failure: Exception | None = exc
    else:
        failure = None
    chunks = []
    while chunk := os.read(request, 65536):
        chunks.append(chunk)
    if not chunks:
        os._exit(0)  # never asked
    asked = json.loads(b"".join(chunks))

    def ask() -> dict[str, Any]:
        if failure is not None:
            raise failure
        try:
            return {"units": _ask_bus(bus, asked["names"], asked["patterns"])}
        finally:
            bus.close()

    _answer(answer, ask)


def _in_child(ask: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any] | None:
    """ASK's answer, computed in a forked child killed at TIMEOUT (None then); a failure in
    the child comes back as {"error": reason}.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child; covered by the system tests
        os.close(read_end)
        _answer(write_end, ask)
    os.close(write_end)
    try:
        payload = read_until(read_end, time.monotonic() + timeout)
    finally:
        os.close(read_end)
        reap(child)
    return None if payload is None else dict(json.loads(payload))


def read_until(fd: int, deadline: float) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def reap(child: int) -> None:
    pid, _ = os.waitpid(child, os.WNOHANG)
    if pid == 0:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def _answer(fd: int, ask: Callable[[], dict[str, Any]]) -> None:  # pragma: no cover - child
    try:
        result = ask()
    except Exception as exc:  # any failure becomes the reason in the report
        result = {"error": f"D-Bus: {type(exc).__name__}: {exc}"}
    try:
        os.write(fd, json.dumps(result).encode())
    finally:
        os._exit(0)


def _open_bus() -> Any:  # pragma: no cover - child process
    from portguard.packages import without_init  # noqa: PLC0415 - only ever in the child

    without_init("pystemd")  # the bus alone: not its unit objects, nor lxml for them
    from pystemd.dbuslib import DBus, DBusAddress  # noqa: PLC0415

    # systemd's private socket works for root before dbus-daemon runs (early boot); an
    # explicit DBUS_SYSTEM_BUS_ADDRESS is the operator's choice and wins.
    explicit = "DBUS_SYSTEM_BUS_ADDRESS" in os.environ
    if os.geteuid() == 0 and not explicit and os.path.exists(PRIVATE_BUS):
        return DBusAddress(f"unix:path={PRIVATE_BUS}".encode(), peer_to_peer=True)
    return DBus()


def _query(  # pragma: no cover - child
    names: Sequence[str], patterns: Sequence[str]
) -> dict[str, dict[str, Any]]:
    bus = _open_bus()
    bus.open()
    try:
        return _ask_bus(bus, names, patterns)
    finally:
        bus.close()


def _ask_bus(  # pragma: no cover - child
    bus: Any, names: Sequence[str], patterns: Sequence[str]
) -> dict[str, dict[str, Any]]:
    from pystemd.dbuslib import apply_signature  # noqa: PLC0415

    found: dict[str, dict[str, Any]] = {}
    # Units systemd has loaded, and only those: a unit not loaded is not running, and asking
    # by name (ListUnitsByNames) makes systemd load every unit file named (1,000 for a
    # 1,000-unit registry), then unload them again while it answers the rest (~300 ms of
    # its time an audit on the busy host). Patterns match unit ids, never aliases, without
    # escapes (FNM_NOESCAPE): a unit's name is a pattern matching itself alone.
    asked = [n.encode() for n in dict.fromkeys([*names, *patterns])]
    rows = (
        _manager(bus, b"ListUnitsByPatterns", apply_signature(b"asas", [[], asked]))
        if asked
        else []
    )
    for row in rows:
        name, description, load_state, active_state, sub_state = map(_text, row[:5])
        if load_state in ("not-found", "stub") and active_state == "inactive":
            continue  # no unit file, only a reference: nothing to say about it
        found[name] = {"name": name, "active_state": active_state, "sub_state": sub_state,
                       "description": description}  # fmt: skip
        if active_state != "inactive":
            # An inactive unit has no process and holds no socket, so nothing below is read
            # of it: a registry of 1,000 units with their files on disk, few of them running,
            # then costs one call, not 4,000 (2.2 s, past audit's timeout for systemd).
            found[name] |= _facts(bus, row[6], name, active_state, apply_signature)
    return found


def _manager(bus: Any, method: bytes, body: Any) -> Any:  # pragma: no cover - child
    return bus.call_method(_DEST, _MANAGER_PATH, b"org.freedesktop.systemd1.Manager", method,
                           body).body  # fmt: skip


def _facts(  # pragma: no cover - child
    bus: Any, path: bytes, name: str, active_state: str, sign: Any
) -> dict[str, Any]:
    def get(interface: str, prop: str) -> Any:
        return bus.call_method(
            _DEST, path, b"org.freedesktop.DBus.Properties", b"Get",
            sign(b"ss", [(_IFACE + interface).encode(), prop.encode()]),
        ).body  # fmt: skip

    data: dict[str, Any] = {"triggered_by": [_text(t) for t in get("Unit", "TriggeredBy")]}
    if not name.endswith(".service"):
        data["triggers"] = [_text(t) for t in get("Unit", "Triggers")]  # a service has none
    else:
        data["main_pid"] = int(get("Service", "MainPID"))
    if active_state == "activating" and name.endswith(".service"):
        # Its start's timeout runs (a guard in its ExecStartPre=): the wait stays below it.
        usec = int(get("Service", "TimeoutStartUSec"))
        # UINT64_MAX is "infinity"; 0 means none was set (also infinite).
        data["timeout_start_ms"] = usec // 1000 if 0 < usec < 2**63 else None
    return data


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def reload_daemon(*, timeout: float) -> None:
    """Ask systemd to reload its unit files (`systemctl daemon-reload`) and wait for its reply;
    raises ReloadFailed within TIMEOUT.
    """
    answer = _in_child(_reload, timeout)
    if answer is None:
        raise ReloadFailed(f"systemd did not confirm the reload within {timeout:g}s")
    if "error" in answer:
        raise ReloadFailed(answer["error"])


def _reload() -> dict[str, Any]:  # pragma: no cover - child
    bus = _open_bus()
    bus.open()
    try:
        # Manager.Reload replies once the reload is done, as `systemctl daemon-reload` waits.
        bus.call_method(_DEST, _MANAGER_PATH, b"org.freedesktop.systemd1.Manager",
                        b"Reload", [])  # fmt: skip
    finally:
        bus.close()
    return {"reloaded": True}

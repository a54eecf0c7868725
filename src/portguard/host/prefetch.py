"""What a busy `check` (or `why`) begins before loading the rest: the census, systemd's facts.

A held `check` spends most of its time importing: the command line and the policy in the
process itself, pyroute2 for the census, pystemd for systemd's facts. Forked as soon as the
free path finds a port busy (only builtin modules are loaded then), a child imports pyroute2
and asks the kernel on another CPU, and a second one connects to systemd, while the parent
loads the policy; the parent then takes the first child's answer for its first census of
those ports, and asks the second its question. Anything unexpected (other ports, a failure,
no answer in time) and the parent reads the table itself, as it always did.
"""

from __future__ import annotations

import posix
import time

# Builtin modules only before the fork (not even `os` or `typing`): the sooner the child
# starts, the more of its work overlaps. mypy takes the name TYPE_CHECKING at its word.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from portguard.host.occupants import Occupant
    from portguard.registry.claims import Proto

Port = tuple[str, int]  # ("tcp" or "udp", port)


class Early:
    """A census of PORTS under way in a child (`census` takes its answer once): of every
    socket on them, or with LISTENING of their listeners only (sockets.listening_census, the
    first look a held `check` takes); and FACTS, a child connecting to systemd; `close` ends
    both in any case."""

    def __init__(self, ports: Iterable[Port], *, listening: bool = False) -> None:
        self.ports = frozenset(ports)
        self.listening = listening
        read_end, write_end = posix.pipe()
        pid = posix.fork()
        if pid == 0:  # pragma: no cover - runs in the child; covered by the system tests
            posix.close(read_end)
            _serve(write_end, self.ports, listening)
        posix.close(write_end)
        self._pid: int | None = pid
        self._answer = read_end
        from portguard.host.units import FactsChild  # noqa: PLC0415 - after the first fork

        self.facts = FactsChild()
        self.facts.start()

    def __enter__(self) -> Early:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def census(self, ports: Iterable[tuple[Proto, int]], timeout: float) -> list[Occupant] | None:
        """The occupants of PORTS from the child, when it was asked for all of them and
        answers within TIMEOUT; None otherwise (then read the table yourself). Once only."""
        import json  # noqa: PLC0415 - after the fork, like everything here

        from portguard.host.units import read_until  # noqa: PLC0415

        wanted = {(str(proto), port) for proto, port in ports}
        if self._answer < 0 or not wanted <= self.ports:
            self._end_census()
            return None
        try:
            payload = read_until(self._answer, time.monotonic() + timeout)
        finally:
            self._end_census()
        answer = json.loads(payload) if payload else {}
        if "occupants" not in answer:
            return None
        from portguard.host.occupants import from_rows  # noqa: PLC0415

        return [o for o in from_rows(answer["occupants"]) if (str(o.proto), o.port) in wanted]

    def close(self) -> None:
        self.facts.close()
        self._end_census()

    def _end_census(self) -> None:
        from portguard.host.units import reap  # noqa: PLC0415

        if self._answer >= 0:
            posix.close(self._answer)
            self._answer = -1
        if self._pid is not None:
            reap(self._pid)
            self._pid = None


def _serve(answer: int, ports: frozenset[Port], listening: bool) -> None:  # pragma: no cover
    import json  # noqa: PLC0415

    try:
        from portguard.host import sockets  # noqa: PLC0415 - pyroute2, in the child

        result: dict[str, object] = {"occupants": sockets.rows(ports, listening=listening)}
    except Exception as exc:  # the parent reads the table itself and meets it there
        result = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        data = json.dumps(result).encode()
        while data:
            data = data[posix.write(answer, data) :]
    finally:
        posix._exit(0)

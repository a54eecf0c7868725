"""Port sets in the kernel's list syntax, and the local port settings as a value: the
ephemeral range outgoing connections take ports from, and the ports reserved out of it.
Pure, so lint can judge a registry against settings read on the host or given by hand;
host/sysctl.py reads the running kernel's.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PortSet:
    """Ports as sorted, disjoint, non-adjacent inclusive ranges."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, ranges: list[tuple[int, int]]) -> "PortSet":
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return cls(tuple(merged))

    @classmethod
    def parse(cls, text: str) -> "PortSet":
        """The kernel's list syntax: `8080,9000-9010` (empty for none)."""
        ranges = []
        for raw in text.replace("\n", ",").split(","):
            item = raw.strip()
            if not item:
                continue
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
        return cls.of(ranges)

    def __str__(self) -> str:
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)

    def __or__(self, other: "PortSet") -> "PortSet":
        return PortSet.of([*self.ranges, *other.ranges])

    def count(self, first: int = 1, last: int = 65535) -> int:
        """How many ports of first..last are in this set."""
        return sum(max(0, min(b, last) - max(a, first) + 1) for a, b in self.ranges)

    def missing(self, first: int, last: int) -> "PortSet":
        """The ports of first..last that are not in this set."""
        gaps: list[tuple[int, int]] = []
        cursor = first
        for a, b in self.ranges:
            if b < cursor or a > last:
                continue
            if a > cursor:
                gaps.append((cursor, a - 1))
            cursor = b + 1
            if cursor > last:
                break
        if cursor <= last:
            gaps.append((cursor, last))
        return PortSet(tuple(gaps))


@dataclass(frozen=True, slots=True)
class LocalPorts:
    """The ephemeral range outgoing connections take ports from, and the ports kept out of it."""

    ephemeral: tuple[int, int]
    reserved: PortSet

    def unprotected(self, first: int, last: int) -> PortSet:
        """Ports of first..last an outgoing connection may take before a service binds them."""
        low, high = max(first, self.ephemeral[0]), min(last, self.ephemeral[1])
        if low > high:
            return PortSet()
        return self.reserved.missing(low, high)

    def reserved_share(self, registered: PortSet) -> tuple[int, int]:
        """(ports, of how many): what the reservations with REGISTERED added would take of the
        ephemeral range. Past half of it, outgoing connections run short sooner (a busy
        proxy or resolver), and `reserve` and lint say so."""
        low, high = self.ephemeral
        return (self.reserved | registered).count(low, high), high - low + 1

    def crowding(self, registered: PortSet) -> str | None:
        """The warning when the reservations would take more than half of the ephemeral
        range, with the fix; None when they would not."""
        taken, size = self.reserved_share(registered)
        if 2 * taken <= size:
            return None
        low, high = self.ephemeral
        return (
            f"the reserved ports would take {taken:,} of the {size:,} ports of the ephemeral "
            f"range {low}-{high} ({100 * taken // size}%), leaving outgoing connections fewer "
            "than half: narrow the widest pool or range (e.g. coturn's min-port/max-port), or "
            "move net.ipv4.ip_local_port_range away from it"
        )

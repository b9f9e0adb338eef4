"""What is on the compute device when: every arrival and departure of a component or block, with its bytes.

The placement code reports each move it makes here, so the tests can check the order and the most that was
ever resident, and the bench can compute a mode's peak weight memory on the CPU from the real shapes built on
the meta device: the same moves as on a GPU, counted instead of measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Residency:
    """The log of moves: ``events`` as ``("arrive" | "leave", unit)``; ``resident`` maps each unit on the device
    to its bytes; ``peak_bytes`` and ``peak_units`` are the largest total seen and what made it."""

    events: list[tuple[str, str]] = field(default_factory=list)
    resident: dict[str, int] = field(default_factory=dict)
    peak_bytes: int = 0
    peak_units: list[str] = field(default_factory=list)

    def arrive(self, unit: str, nbytes: int) -> None:
        self.events.append(("arrive", unit))
        self.resident[unit] = nbytes
        total = sum(self.resident.values())
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_units = total, list(self.resident)

    def leave(self, unit: str) -> None:
        self.events.append(("leave", unit))
        self.resident.pop(unit, None)

    def most_resident(self, prefix: str) -> int:
        """The most units whose name starts with ``prefix`` that were on the device at the same time."""
        present: set[str] = set()
        most = 0
        for op, unit in self.events:
            if unit.startswith(prefix):
                (present.add if op == "arrive" else present.discard)(unit)
                most = max(most, len(present))
        return most

    def resident_bytes(self) -> int:
        return sum(self.resident.values())

    def restart_peak(self) -> None:
        """Count the peak from now on (what is resident now), e.g. per stage."""
        self.peak_bytes, self.peak_units = self.resident_bytes(), list(self.resident)

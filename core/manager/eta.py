"""The ETA of a switch from the per-phase history of its model pair.

The history gives the median seconds of each switch phase (unloading, loading...) and of each
phase of the load (spawn, imports, weights...). What is left is the rest of the phase running
now (never below zero: a slow phase does not make the ETA negative, it holds it at what the later
phases take) plus every later phase. Pure: the manager says where the switch is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.engine.load_phases import LOAD_PHASES
from core.history_store import PHASE_COLUMNS


@dataclass(frozen=True)
class SwitchEta:
    """predicted: median seconds per switch phase and load phase (HistoryStore.predicted_phases)."""

    predicted: Mapping[str, float]

    @property
    def total(self) -> float | None:
        """The predicted duration of the whole switch; None without history."""
        known = [self.predicted[p] for p in PHASE_COLUMNS if p in self.predicted]
        return sum(known) if known else None

    def remaining(self, phase: str, in_phase_s: float, load_phase: str | None = None,
                  in_load_phase_s: float = 0.0) -> float | None:
        """Seconds left with the switch `in_phase_s` into `phase` (and, while loading,
        `in_load_phase_s` into `load_phase` of the load). None without history."""
        if self.total is None:
            return None
        later = PHASE_COLUMNS[PHASE_COLUMNS.index(phase) + 1:] if phase in PHASE_COLUMNS else ()
        after = sum(self.predicted.get(p, 0.0) for p in later)
        if phase == "loading" and load_phase in LOAD_PHASES and load_phase in self.predicted:
            rest = LOAD_PHASES[LOAD_PHASES.index(load_phase) + 1:]
            left = (max(0.0, self.predicted[load_phase] - in_load_phase_s)
                    + sum(self.predicted.get(p, 0.0) for p in rest))
            return left + after
        return max(0.0, self.predicted.get(phase, 0.0) - in_phase_s) + after

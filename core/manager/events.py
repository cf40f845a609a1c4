"""Switch progress events: one per phase, with timings and an ETA from history (for the GUI)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SwitchPhase(StrEnum):
    PLANNING = "planning"
    UNLOADING = "unloading"
    WAITING_FOR_MEMORY = "waiting_for_memory"
    CHECKING = "checking"
    LOADING = "loading"
    WARMING_UP = "warming_up"
    READY = "ready"
    FAILED = "failed"
    FALLBACK = "fallback"
    CANCELLED = "cancelled"


class StateChange(StrEnum):
    """Not a switch's phase: what happened to the active model outside a switch. Sent as a
    SwitchEvent (phase = one of these, switch_id 0) so subscribers keep one stream of events."""

    ADVICE = "advice"  # the alert policy's advice in advise-only mode
    CRASHED = "crashed"  # its engine died; no model is active
    UNLOADED = "unloaded"  # an emergency unload (an alert with nothing smaller to go to)
    CONCURRENCY = "concurrency"  # the thermal policy changed how many requests run at once
    # A switch is over, whatever its outcome: state().switching_to is None again. Sent after
    # the terminal phase, so a view refreshed on it never shows a finished switch as running.
    SETTLED = "settled"


# A switch's own steps, in order: the history keeps each one's duration (a column per phase).
TIMED_PHASES = (SwitchPhase.PLANNING, SwitchPhase.UNLOADING, SwitchPhase.WAITING_FOR_MEMORY,
                SwitchPhase.CHECKING, SwitchPhase.LOADING, SwitchPhase.WARMING_UP)
TERMINAL_PHASES = frozenset({SwitchPhase.READY, SwitchPhase.FAILED, SwitchPhase.CANCELLED})
# Events about the active model that are not part of a switch's progress.
STATE_PHASES: frozenset[StateChange] = frozenset(StateChange)


@dataclass(frozen=True)
class SwitchEvent:
    """A switch entered a phase (or ended).

    elapsed_s: since the switch began; eta_s: predicted seconds left (None: no history yet);
    predicted_total_s: the history's prediction for the whole switch; message: for people.
    """

    switch_id: int
    phase: SwitchPhase | StateChange
    target: str
    from_model: str | None
    reason: str
    elapsed_s: float
    eta_s: float | None = None
    predicted_total_s: float | None = None
    attempt: int = 1
    message: str = ""
    error: str | None = None

    @property
    def progress(self) -> float | None:
        """Fraction done (0..1) by the prediction, for a progress bar; None without history.
        From the time left (the per-phase ETA), so a slow phase holds the bar back instead of
        letting it run ahead of the switch."""
        if self.phase in TERMINAL_PHASES:
            return 1.0
        if not self.predicted_total_s:
            return None
        if self.eta_s is not None and self.elapsed_s + self.eta_s > 0:
            return min(0.99, self.elapsed_s / (self.elapsed_s + self.eta_s))
        return min(0.99, self.elapsed_s / self.predicted_total_s)

"""Threshold alerts with hysteresis and a minimum duration: a value hovering at a line won't flap.

A level is raised once its threshold has been met or exceeded continuously for
``min_duration_seconds``; it clears only when the value falls below ``threshold - hysteresis``.
Times are the snapshots' own timestamps, so tests drive the evaluator with a made-up clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.telemetry.config import HardwareMonitoring, LevelThreshold
from core.telemetry.snapshot import GpuSnapshot, Sample, gpu_metric

Level = Literal["warning", "critical"]
Change = Literal["started", "escalated", "deescalated", "ended"]

# Clock-event reasons that mean the GPU is slowing down because of heat or an electrical limit.
# SwPowerCap alone is routine on laptops (the TGP is the limit) and raises nothing.
THERMAL_THROTTLE_EVENTS = frozenset({"HwThermal", "SwThermal", "HwSlowdown", "HwPowerBrake"})


@dataclass(frozen=True)
class AlertEvent:
    """A change in one alert: it started, changed level, or ended.

    ``kind`` is what the config's ``alerts:`` mapping keys on (vram_overflow, temperature,
    thermal_throttle, power_limit, gpu_lost). ``started_at`` is when the value first crossed the
    line of this episode (before the minimum duration ran out); ``ended_at`` is set on "ended".
    ``threshold`` is the line of ``level``; ``value`` the reading that caused this event.
    """

    kind: str
    metric: str
    level: Level
    change: Change
    value: float
    threshold: float
    started_at: float
    ended_at: float | None
    at: float

    @property
    def active(self) -> bool:
        return self.change != "ended"


Alert = AlertEvent  # the same thing, by the name the design notes use


class _LevelTracker:
    """One metric's level state machine."""

    def __init__(
        self,
        kind: str,
        metric: str,
        levels: Sequence[tuple[Level, float]],
        hysteresis: float,
        min_duration: float,
    ) -> None:
        self.kind = kind
        self.metric = metric
        self._levels = tuple(levels)  # ascending thresholds
        self._hysteresis = hysteresis
        self._min_duration = min_duration
        self._since: list[float | None] = [None] * len(self._levels)
        self._current = -1  # index into levels; -1 = no alert
        self._episode_start = 0.0
        self._last_value = 0.0
        self._last_at = 0.0

    def update(self, value: float, at: float) -> AlertEvent | None:
        for i, (_, threshold) in enumerate(self._levels):
            if value >= threshold:
                if self._since[i] is None:
                    self._since[i] = at
            else:
                self._since[i] = None
        raised = -1
        for i, since in enumerate(self._since):
            if since is not None and at - since >= self._min_duration:
                raised = i
        held = -1
        for i in range(self._current, -1, -1):
            if value >= self._levels[i][1] - self._hysteresis:
                held = i
                break
        self._last_value, self._last_at = value, at
        return self._move(max(raised, held), value, at)

    def retune(self, other: _LevelTracker) -> None:
        """Take other's thresholds, hysteresis and duration; keep this one's state (a raised
        alert stays raised until the new levels clear it, and still ends with an event)."""
        self._levels = other._levels
        self._hysteresis = other._hysteresis
        self._min_duration = other._min_duration

    def end(self, at: float) -> AlertEvent | None:
        """Force the alert to end (its device is gone)."""
        self._since = [None] * len(self._levels)
        return self._move(-1, self._last_value, at)

    def current(self) -> AlertEvent | None:
        if self._current < 0:
            return None
        level, threshold = self._levels[self._current]
        return AlertEvent(self.kind, self.metric, level, "started", self._last_value, threshold,
                          self._episode_start, None, self._last_at)

    def _move(self, new: int, value: float, at: float) -> AlertEvent | None:
        old = self._current
        if new == old:
            return None
        self._current = new
        if old < 0:
            starts = [s for s in self._since[: new + 1] if s is not None]
            self._episode_start = min(starts) if starts else at
            change: Change = "started"
        elif new < 0:
            change = "ended"
        else:
            change = "escalated" if new > old else "deescalated"
        level, threshold = self._levels[new if new >= 0 else old]
        return AlertEvent(
            kind=self.kind,
            metric=self.metric,
            level=level,
            change=change,
            value=value,
            threshold=threshold,
            started_at=self._episode_start,
            ended_at=at if change == "ended" else None,
            at=at,
        )


class AlertEvaluator:
    """Turns samples into alert events, per GPU: VRAM use, temperature, power, throttling, loss."""

    def __init__(self, monitoring: HardwareMonitoring) -> None:
        self._config = monitoring
        self._per_gpu: dict[int, dict[str, _LevelTracker]] = {}

    def evaluate(self, sample: Sample) -> list[AlertEvent]:
        """Feed one sample; returns the events it caused (usually none)."""
        events: list[AlertEvent] = []
        for gpu in sample.gpus:
            events.extend(self._evaluate_gpu(gpu))
        return events

    def active(self) -> list[AlertEvent]:
        """Alerts currently raised, each as its latest state."""
        out: list[AlertEvent] = []
        for trackers in self._per_gpu.values():
            for tracker in trackers.values():
                alert = tracker.current()
                if alert is not None:
                    out.append(alert)
        return out

    def _evaluate_gpu(self, gpu: GpuSnapshot) -> list[AlertEvent]:
        trackers = self._trackers(gpu.index)
        at = gpu.timestamp
        results: list[AlertEvent | None] = []
        if gpu.lost:
            results.extend(t.end(at) for name, t in trackers.items() if name != "lost")
            results.append(trackers["lost"].update(1.0, at))
            return [e for e in results if e is not None]
        readings: dict[str, float | None] = {
            "vram_usage": gpu.vram_used_fraction,
            "temperature": gpu.temperature_c,
            "power": gpu.power_w,
            "throttle": (
                None if gpu.clock_events is None
                else float(bool(THERMAL_THROTTLE_EVENTS.intersection(gpu.clock_events)))
            ),
            "lost": 0.0,
        }
        for name, value in readings.items():
            if value is not None:  # an unsupported metric leaves its alert as it was
                results.append(trackers[name].update(value, at))
        return [e for e in results if e is not None]

    def reconfigure(self, monitoring: HardwareMonitoring) -> None:
        """New thresholds from now on (the settings dialog), without forgetting what is raised."""
        self._config = monitoring
        for index, trackers in list(self._per_gpu.items()):  # the sampler thread may add one
            for name, fresh in self._new_trackers(index).items():
                trackers[name].retune(fresh)

    def _trackers(self, index: int) -> dict[str, _LevelTracker]:
        trackers = self._per_gpu.get(index)
        if trackers is None:
            trackers = self._per_gpu[index] = self._new_trackers(index)
        return trackers

    def _new_trackers(self, index: int) -> dict[str, _LevelTracker]:
        t = self._config.thresholds

        def levels(kind: str, metric: str, th: LevelThreshold) -> _LevelTracker:
            return _LevelTracker(kind, gpu_metric(index, metric),
                                 (("warning", th.warning), ("critical", th.critical)),
                                 th.hysteresis, th.min_duration_seconds)

        return {
            "vram_usage": levels("vram_overflow", "vram_usage", t.vram_usage),
            "temperature": levels("temperature", "temperature_c", t.temperature),
            "power": levels("power_limit", "power_w", t.power),
            "throttle": _LevelTracker("thermal_throttle", gpu_metric(index, "thermal_throttle"),
                                      ((t.thermal_throttle.level, 1.0),), 0.0,
                                      t.thermal_throttle.min_duration_seconds),
            "lost": _LevelTracker("gpu_lost", gpu_metric(index, "lost"), (("critical", 1.0),),
                                  0.0, 0.0),
        }

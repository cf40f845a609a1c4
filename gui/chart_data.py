"""What the live charts draw, without Qt: the chart specs, the alert periods and model switches
on the time axis, and the numpy helpers that decimate a window (PeakBuckets) and round a value
axis (nice_range). The widget that draws them is gui/charts.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

WindowQuery = Callable[[str, float], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ChartSpec:
    """One chart: which history metrics it draws, with a unit scale and threshold lines.

    alert_metrics: the alert metrics (AlertEvent.metric) whose periods are shaded on this chart.
    """

    title: str
    unit: str
    metrics: tuple[str, ...]
    scale: float = 1.0
    thresholds: tuple[tuple[str, float], ...] = ()  # (label, value in display units)
    missing_text: str = "not reported by this GPU"
    alert_metrics: tuple[str, ...] = ()


@dataclass
class AlertPeriod:
    metric: str
    level: str
    start: float
    end: float | None  # None: still active
    label: str = ""  # the shaded region's tooltip (e.g. the throttle reason by name)


@dataclass
class ChartAnnotations:
    """Alert periods and model switches to draw on the time axis (wall-clock seconds)."""

    alerts: list[AlertPeriod] = field(default_factory=list)
    switches: list[tuple[float, str]] = field(default_factory=list)
    version: int = 0

    def alert_changed(self, metric: str, level: str, change: str, started_at: float,
                      at: float, label: str = "") -> None:
        open_period = next((p for p in reversed(self.alerts)
                            if p.metric == metric and p.end is None), None)
        if change == "ended":
            if open_period is not None:
                open_period.end = at
        elif open_period is None:
            self.alerts.append(AlertPeriod(metric, level, started_at, None,
                                           label or f"{metric}: {level}"))
        elif open_period.level != level:  # escalated / de-escalated: a new shade from now
            open_period.end = at
            self.alerts.append(AlertPeriod(metric, level, at, None,
                                           label or f"{metric}: {level}"))
        self.version += 1

    def switch(self, at: float, label: str) -> None:
        self.switches.append((at, label))
        self.version += 1


WINDOWS = (("1 min", 60), ("5 min", 300), ("15 min", 900), ("60 min", 3600))


class PeakBuckets:
    """Min/max buckets of one curve aligned to absolute time, kept between frames: a new row
    recomputes only the newest bucket and buckets that left the window are dropped, instead of
    decimating the whole hour on every frame. Each bucket is drawn as its (first x, min) and
    (last x, max), so a short peak stays visible."""

    def __init__(self) -> None:
        self.width_s = 0.0
        self.last_t = -math.inf
        self.ids = np.empty(0, dtype=np.int64)
        self.lo = self.hi = self.x0 = self.x1 = np.empty(0)

    @staticmethod
    def _buckets(x: np.ndarray, y: np.ndarray, width_s: float) -> tuple[np.ndarray, ...]:
        ids = np.floor(x / width_s).astype(np.int64)
        cuts = np.flatnonzero(np.diff(ids)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts - 1, [len(x) - 1]))
        return (ids[starts], np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts),
                x[starts], x[ends])

    def update(self, x: np.ndarray, y: np.ndarray, width_s: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """x ascending and y finite (the window's data); returns (xs, ys) to draw."""
        start = int(np.searchsorted(x, self.last_t, side="right"))
        if width_s != self.width_s or not len(self.ids) or x[-1] < self.last_t or start == 0:
            self.width_s = width_s
            self.ids, self.lo, self.hi, self.x0, self.x1 = self._buckets(x, y, width_s)
        elif start < len(x):
            ids, lo, hi, x0, x1 = self._buckets(x[start:], y[start:], width_s)
            if ids[0] == self.ids[-1]:  # the newest bucket grew
                self.lo[-1] = min(self.lo[-1], lo[0])
                self.hi[-1] = max(self.hi[-1], hi[0])
                self.x1[-1] = x1[0]
                ids, lo, hi, x0, x1 = ids[1:], lo[1:], hi[1:], x0[1:], x1[1:]
            if len(ids):
                self.ids = np.concatenate((self.ids, ids))
                self.lo = np.concatenate((self.lo, lo))
                self.hi = np.concatenate((self.hi, hi))
                self.x0 = np.concatenate((self.x0, x0))
                self.x1 = np.concatenate((self.x1, x1))
        self.last_t = float(x[-1])
        first = int(np.searchsorted(self.ids, math.floor(x[0] / width_s)))
        if first:  # buckets that left the window
            self.ids, self.lo, self.hi = self.ids[first:], self.lo[first:], self.hi[first:]
            self.x0, self.x1 = self.x0[first:], self.x1[first:]
        if self.x0[0] < x[0]:  # the oldest bucket is partly out of the window: its rest only
            # The points up to the next bucket's end, bucketed as a rebuild would.
            k = int(np.searchsorted(x, (self.ids[0] + 2) * width_s))
            head = np.floor(x[:k] / width_s).astype(np.int64)
            n = int(np.searchsorted(head, self.ids[0], side="right"))
            self.lo[0], self.hi[0] = float(y[:n].min()), float(y[:n].max())
            self.x0[0], self.x1[0] = x[0], x[n - 1]
        xs = np.empty(2 * len(self.ids))
        ys = np.empty(2 * len(self.ids))
        xs[0::2] = self.x0
        xs[1::2] = self.x1
        ys[0::2] = self.lo
        ys[1::2] = self.hi
        return xs, ys


def nice_range(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] padded by ~5 % and widened outwards to round numbers, so that a value axis
    keeps its range (and its cached picture) while the data moves inside it."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    span = hi - lo
    if span <= 0:
        span = abs(hi) or 1.0
    pad = span * 0.05
    step = 10 ** math.floor(math.log10(span)) / 2
    low = math.floor((lo - pad) / step) * step
    if lo >= 0 > low:  # these metrics are never negative: no axis room below zero
        low = 0.0
    return low, math.ceil((hi + pad) / step) * step

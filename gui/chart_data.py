"""What the live charts draw, without Qt: the chart specs, the alert periods and model switches
on the time axis, and the numpy helpers that decimate a curve as its rows arrive (PeakBuckets)
and round a value axis (nice_range). The widget that draws them is gui/charts.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class ChartSource(Protocol):
    """Where the charts read their rows (the core's TelemetryHistory, or a recording's)."""

    def window(self, metric: str, seconds: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...

    def rows_since(self, metric: str, row: int) -> tuple[np.ndarray, np.ndarray, int]: ...


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
    """One curve's minimum and maximum per time bucket, buckets aligned to multiples of
    width_s, fed only the rows that are new (extend) and dropping whole buckets that left the
    window (trim): a frame costs what is new plus the buckets, never the whole hour again.

    Each bucket is drawn as (its first time, its minimum), (its last time, its maximum), so a
    one-sample peak stays visible. NaN rows (not reported) are ignored inside a bucket; a
    bucket of NaN rows only has NaN points, drawn as a gap. The oldest bucket keeps rows up to
    one bucket older than the window: drawn left of the time axis' start, where the view clips.
    """

    def __init__(self, width_s: float) -> None:
        self.width_s = width_s
        self.ids = np.empty(0, dtype=np.int64)  # bucket numbers: floor(time / width_s)
        self.counts = np.empty(0, dtype=np.int64)  # rows in each bucket
        self.xs = np.empty(0)  # two per bucket: first time, last time
        self.ys = np.empty(0)  # two per bucket: minimum, maximum
        self.rows = 0  # rows held, all buckets together

    def extend(self, x: np.ndarray, y: np.ndarray) -> None:
        """Rows newer than every row given before (x ascending)."""
        if not len(x):
            return
        ids = np.floor(x / self.width_s).astype(np.int64)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(ids)) + 1))
        ends = np.append(starts[1:], len(x))
        xs = np.empty(2 * len(starts))
        ys = np.empty(2 * len(starts))
        xs[0::2], xs[1::2] = x[starts], x[ends - 1]
        ys[0::2], ys[1::2] = np.fmin.reduceat(y, starts), np.fmax.reduceat(y, starts)
        ids, counts = ids[starts], ends - starts
        if len(self.ids) and ids[0] == self.ids[-1]:  # the newest bucket grew
            xs[0] = self.xs[-2]
            ys[0], ys[1] = np.fmin(ys[0], self.ys[-2]), np.fmax(ys[1], self.ys[-1])
            counts[0] += self.counts[-1]
            self.rows -= int(self.counts[-1])
            self.ids, self.counts = self.ids[:-1], self.counts[:-1]
            self.xs, self.ys = self.xs[:-2], self.ys[:-2]
        # New arrays (not in place): what was handed out for drawing stays as it was.
        self.ids = np.concatenate((self.ids, ids))
        self.counts = np.concatenate((self.counts, counts))
        self.xs = np.concatenate((self.xs, xs))
        self.ys = np.concatenate((self.ys, ys))
        self.rows += int(counts.sum())

    def trim(self, start: float) -> None:
        """Drop the buckets that end before `start` (the window's first time)."""
        k = int(np.searchsorted(self.ids, math.floor(start / self.width_s)))
        if k:
            self.rows -= int(self.counts[:k].sum())
            self.ids, self.counts = self.ids[k:], self.counts[k:]
            self.xs, self.ys = self.xs[2 * k:], self.ys[2 * k:]


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

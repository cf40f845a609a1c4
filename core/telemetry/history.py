"""Fixed-size ring buffers of telemetry, one per metric, with window queries and CSV export.

Layout: one shared time column and one float64 column per metric, all of ``capacity`` rows.
NaN means "not reported" (an unsupported metric, or a metric that appeared later than others).
Timestamps are seconds (wall clock, ``time.time()``) and are kept non-decreasing.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.telemetry.snapshot import GpuSnapshot, HostSnapshot, Sample, gpu_metric

FloatArray = npt.NDArray[np.float64]

_HOST_FIELDS = (
    "ram_used_bytes",
    "ram_total_bytes",
    "swap_used_bytes",
    "cpu_percent",
    "cpu_temperature_c",
    "package_power_w",
)
_GPU_FIELDS = (
    "vram_used_bytes",
    "vram_total_bytes",
    "temperature_c",
    "power_w",
    "power_limit_w",
    "gpu_util_percent",
    "mem_util_percent",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "fan_percent",
)


def host_metrics(host: HostSnapshot) -> dict[str, float]:
    """The host's charted metrics, named ``host.<field>``."""
    return {f"host.{f}": _number(getattr(host, f)) for f in _HOST_FIELDS}


def gpu_metrics(gpu: GpuSnapshot) -> dict[str, float]:
    """A GPU's charted metrics, named ``gpu<index>.<field>`` (all NaN once the GPU is lost)."""
    return {gpu_metric(gpu.index, f): _number(getattr(gpu, f)) for f in _GPU_FIELDS}


def sample_metrics(sample: Sample) -> dict[str, float]:
    """Every charted metric of one sample, e.g. ``gpu0.vram_used_bytes``, ``host.cpu_percent``."""
    values = host_metrics(sample.host)
    for gpu in sample.gpus:
        values.update(gpu_metrics(gpu))
    return values


def _number(value: float | int | None) -> float:
    return math.nan if value is None else float(value)


class TelemetryHistory:
    """The last ``capacity`` samples of every metric, in preallocated numpy ring buffers.

    Not thread-safe: the sampler thread appends; readers on other threads should take their
    window from a subscriber callback or accept that a row may be mid-write.
    """

    DEFAULT_CAPACITY = 7200  # 1 h at the default 2 Hz; Sampler sizes it from the config

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._times: FloatArray = np.full(capacity, np.nan)
        self._columns: dict[str, FloatArray] = {}
        self._count = 0  # rows ever appended
        self._last_time = -math.inf

    @classmethod
    def for_rate(cls, interval_seconds: float, history_seconds: float) -> TelemetryHistory:
        """A history holding history_seconds of samples taken every interval_seconds."""
        return cls(max(1, math.ceil(history_seconds / interval_seconds)))

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def metrics(self) -> list[str]:
        """Names of the metrics seen so far, in first-seen order."""
        return list(self._columns)

    def append(self, sample: Sample) -> None:
        """Store one tick; its time is the host snapshot's timestamp."""
        self.append_values(sample.host.timestamp, sample_metrics(sample))

    def append_values(self, timestamp: float, values: Mapping[str, float]) -> None:
        """Store one row; metrics missing from values are NaN in this row.

        A timestamp earlier than the last one (the wall clock stepped back) is clamped to it, so
        times stay sorted and window queries can bisect.
        """
        slot = self._count % self.capacity
        t = max(float(timestamp), self._last_time)
        self._last_time = t
        self._times[slot] = t
        for name, column in self._columns.items():
            column[slot] = values.get(name, math.nan)
        for name, value in values.items():
            if name not in self._columns:
                column = np.full(self.capacity, np.nan)
                column[slot] = value
                self._columns[name] = column
        self._count += 1

    def latest(self, metric: str) -> float | None:
        """The newest value of metric (None if never stored or not reported then)."""
        if self._count == 0 or metric not in self._columns:
            return None
        value = float(self._columns[metric][(self._count - 1) % self.capacity])
        return None if math.isnan(value) else value

    def window(self, metric: str, seconds: float | None = None) -> tuple[FloatArray, FloatArray]:
        """Times and values of the last ``seconds`` (all stored rows when None), oldest first.

        Views into the ring buffer, no copy, whenever the window is contiguous in memory: always
        before the buffer first wraps, and afterwards whenever the window lies within the rows
        written since the write position last passed the end. Only a window straddling the wrap
        point is returned as a concatenation (a copy of the window, never of the whole buffer).
        Do not keep the views across appends: later rows overwrite them.
        Unknown metric: KeyError.
        """
        column = self._columns[metric]
        n = len(self)
        if n == 0:
            return self._times[:0], column[:0]
        newest = (self._count - 1) % self.capacity + 1  # one past the newest row
        if self._count <= self.capacity:  # not wrapped: rows 0..n-1 in order
            segments = [(0, n)]
        else:
            segments = [(newest, self.capacity), (0, newest)]  # older part, newer part
        newest_time = float(self._times[newest - 1])
        start_time = -math.inf if seconds is None else newest_time - seconds
        # Find the first row at or after start_time, searching the newest segment first.
        lo, hi = segments[-1]
        first = lo + int(np.searchsorted(self._times[lo:hi], start_time, side="left"))
        if first > lo or len(segments) == 1:
            return self._times[first:hi], column[first:hi]
        o_lo, o_hi = segments[0]
        o_first = o_lo + int(np.searchsorted(self._times[o_lo:o_hi], start_time, side="left"))
        if o_first == o_hi:  # nothing old enough in the older segment
            return self._times[lo:hi], column[lo:hi]
        times = np.concatenate((self._times[o_first:o_hi], self._times[lo:hi]))
        values = np.concatenate((column[o_first:o_hi], column[lo:hi]))
        return times, values

    def rows_since(self, metric: str, row: int) -> tuple[FloatArray, FloatArray, int]:
        """Times and values of the rows appended after the first ``row`` rows ever appended,
        oldest first, and the row count to pass next time: a reader that keeps its count gets
        each new row once, at a cost proportional to the new rows (the live charts).

        ``row=0`` gives every stored row. Rows already overwritten are skipped (the oldest
        stored row comes first). Views, as window(), unless the rows straddle the wrap point.
        Unknown metric: KeyError.
        """
        column = self._columns[metric]
        count = self._count  # read once: the sampler thread finishes a row before counting it
        first = max(row, count - self.capacity)
        if first >= count:
            return self._times[:0], column[:0], count
        lo, hi = first % self.capacity, (count - 1) % self.capacity + 1
        if lo < hi:
            return self._times[lo:hi], column[lo:hi], count
        return (np.concatenate((self._times[lo:], self._times[:hi])),
                np.concatenate((column[lo:], column[:hi])), count)

    def nbytes(self) -> int:
        """Memory held by the buffers."""
        return int(self._times.nbytes + sum(c.nbytes for c in self._columns.values()))

    # -- CSV -------------------------------------------------------------------------------------

    def export_csv(self, path: Path | str) -> None:
        """Write every stored row, oldest first: ``timestamp`` then one column per metric."""
        names = self.metrics()
        columns = [self.window(name)[1] for name in names]
        times = self.window(names[0])[0] if names else self._times[: len(self)]
        with Path(path).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["timestamp", *names])
            for i, t in enumerate(times):
                writer.writerow([repr(float(t)), *(_cell(c[i]) for c in columns)])

    @classmethod
    def from_csv(cls, path: Path | str, capacity: int | None = None) -> TelemetryHistory:
        """Re-open an exported history (for viewing). Capacity defaults to the number of rows."""
        with Path(path).open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if not rows or rows[0][:1] != ["timestamp"]:
            raise ValueError(f"{path}: not a vrampilot telemetry CSV (no 'timestamp' header)")
        names = rows[0][1:]
        body = rows[1:]
        history = cls(max(1, capacity or len(body)))
        for line_no, row in enumerate(body, start=2):
            if len(row) != len(names) + 1:
                raise ValueError(f"{path}:{line_no}: expected {len(names) + 1} cells")
            try:
                values = {n: (float(v) if v else math.nan) for n, v in zip(names, row[1:],
                                                                            strict=True)}
                history.append_values(float(row[0]), values)
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from None
        for name in names:  # keep columns that were NaN throughout
            history._columns.setdefault(name, np.full(history.capacity, np.nan))
        return history


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


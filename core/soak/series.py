"""A soak run as aligned columns, one row per device sample: what the charts draw and the CSV
holds. Built from a live recording (the GUI's live view) or read back from a saved CSV."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.soak.recording import SoakRecording

FloatArray = npt.NDArray[np.float64]

NUMERIC = ("t_s", "temperature_c", "power_w", "power_limit_w", "sm_clock_mhz", "mem_clock_mhz",
           "gpu_util_percent", "host_power_w", "total_energy_mj", "tokens", "tokens_per_s",
           "first_token_s")


@dataclass
class SoakSeries:
    """Columns of equal length. t_s: seconds since the run started. NaN: not reported.

    tokens: tokens streamed since the previous sample (the real stream's deltas);
    tokens_per_s: that over the time since the previous sample; first_token_s: the mean
    first-token time of the requests whose first token arrived in that interval.
    """

    t_s: FloatArray
    temperature_c: FloatArray
    power_w: FloatArray
    power_limit_w: FloatArray
    sm_clock_mhz: FloatArray
    mem_clock_mhz: FloatArray
    gpu_util_percent: FloatArray
    host_power_w: FloatArray
    total_energy_mj: FloatArray
    tokens: FloatArray
    tokens_per_s: FloatArray
    first_token_s: FloatArray
    throttle_reasons: list[str]  # "" when not throttled, else e.g. "SwThermal"
    clock_events: list[str]  # every clock-event reason, "|"-joined ("" none, "-" not reported)

    def __len__(self) -> int:
        return len(self.t_s)

    def throttled_spans(self) -> list[tuple[float, float, str]]:
        """(start, end, reasons) of each stretch of samples with a throttle reason."""
        spans: list[tuple[float, float, str]] = []
        start: float | None = None
        reason = ""
        for i, r in enumerate(self.throttle_reasons):
            if r and start is None:
                start, reason = float(self.t_s[i]), r
            elif not r and start is not None:
                spans.append((start, float(self.t_s[i]), reason))
                start = None
        if start is not None:
            spans.append((start, float(self.t_s[-1]), reason))
        return spans


def series_of(recording: SoakRecording) -> SoakSeries:
    """Align the recording's token stream and requests to its device samples."""
    t0 = recording.started
    end = recording.ended
    rows = [r for r in recording.device if r.t >= t0 and (end is None or r.t <= end)]
    times = np.array([r.t for r in rows], dtype=np.float64)

    def column(values: list[float | None]) -> FloatArray:
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    # Tokens streamed in (previous sample, this sample]; the first sample counts from t0.
    tokens = np.zeros(len(rows))
    if len(rows):
        token_t = np.array([t for t, _ in recording.tokens], dtype=np.float64)
        token_n = np.array([n for _, n in recording.tokens], dtype=np.float64)
        idx = np.searchsorted(times, token_t, side="left")
        keep = idx < len(rows)
        np.add.at(tokens, idx[keep], token_n[keep])
    dt = np.diff(times, prepend=t0) if len(rows) else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(dt > 0, tokens / np.where(dt > 0, dt, 1.0), math.nan)
    first = np.full(len(rows), math.nan)
    if len(rows):
        sums = np.zeros(len(rows))
        counts = np.zeros(len(rows))
        for req in recording.requests:
            if req.first_token_s is None:
                continue
            i = int(np.searchsorted(times, req.started + req.first_token_s, side="left"))
            if i < len(rows):
                sums[i] += req.first_token_s
                counts[i] += 1
        first = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), math.nan)
    return SoakSeries(
        t_s=times - t0,
        temperature_c=column([r.temperature_c for r in rows]),
        power_w=column([r.power_w for r in rows]),
        power_limit_w=column([r.power_limit_w for r in rows]),
        sm_clock_mhz=column([r.sm_clock_mhz for r in rows]),
        mem_clock_mhz=column([r.mem_clock_mhz for r in rows]),
        gpu_util_percent=column([r.gpu_util_percent for r in rows]),
        host_power_w=column([r.host_power_w for r in rows]),
        total_energy_mj=column([r.total_energy_mj for r in rows]),
        tokens=tokens,
        tokens_per_s=rate,
        first_token_s=first,
        throttle_reasons=["|".join(r.throttle_reasons) for r in rows],
        clock_events=["-" if r.clock_events is None else "|".join(r.clock_events) for r in rows],
    )


def write_csv(series: SoakSeries, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*NUMERIC, "throttle_reasons", "clock_events"])
        columns = [getattr(series, name) for name in NUMERIC]
        for i in range(len(series)):
            writer.writerow([*(_cell(c[i]) for c in columns), series.throttle_reasons[i],
                             series.clock_events[i]])


def read_csv(path: Path) -> SoakSeries:
    """Read a saved run's samples; ValueError names the file and line of a bad row."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header = [*NUMERIC, "throttle_reasons", "clock_events"]
    if not rows or rows[0] != header:
        raise ValueError(f"{path}: not a vrampilot soak CSV (expected the header {header})")
    numbers: list[list[float]] = [[] for _ in NUMERIC]
    reasons: list[str] = []
    events: list[str] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{line_no}: expected {len(header)} cells, got {len(row)}")
        try:
            for col, cell in zip(numbers, row[:len(NUMERIC)], strict=True):
                col.append(float(cell) if cell else math.nan)
        except ValueError as exc:
            raise ValueError(f"{path}:{line_no}: {exc}") from None
        reasons.append(row[-2])
        events.append(row[-1])
    arrays = {name: np.array(col, dtype=np.float64) for name, col in zip(NUMERIC, numbers,
                                                                          strict=True)}
    return SoakSeries(**arrays, throttle_reasons=reasons, clock_events=events)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


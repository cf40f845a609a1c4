"""The soak report: computed from a recording, saved as JSON + CSV (+ PNG from the GUI layer),
reopened for viewing and overlaying.

Windows: with a run of at least two minutes, "steady state" is the mean of the last minute and
tokens/s are compared between the first and the last minute; a shorter run uses its first and
last 20 % instead (the report says which). Intervals are minutes, or fifths of a short run.
Energy: NVML's total-energy counter where the GPU has one, else its power integrated over time
(trapezoids); the host's RAPL package power likewise. Nothing readable: "not reported", never 0 J.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.paths import data_dir
from core.soak.recording import DeviceRow, SoakRecording
from core.soak.series import FloatArray, SoakSeries, read_csv, series_of, write_csv

REPORT_VERSION = 1
SHORT_RUN_S = 120.0  # below this, windows are 20 % of the run instead of one minute
REPORT_FILE = "report.json"
SAMPLES_FILE = "samples.csv"
CHART_FILE = "charts.png"


@dataclass(frozen=True)
class Windows:
    length_s: float
    first_basis: str
    last_basis: str
    interval_s: float


def windows_for(duration_s: float) -> Windows:
    if duration_s >= SHORT_RUN_S:
        return Windows(60.0, "first minute", "last minute", 60.0)
    return Windows(0.2 * duration_s, "first 20 % of a run under 2 min",
                   "last 20 % of a run under 2 min", duration_s / 5)


def build_report(recording: SoakRecording, settings: dict[str, Any], *, model: str,
                 device: str, simulated: bool, ended_by: str, end_reason: str) -> dict[str, Any]:
    """Every figure of the report, as JSON-ready data. recording.ended must be set."""
    t0 = recording.started
    t1 = recording.ended if recording.ended is not None else time.time()
    duration = max(0.0, t1 - t0)
    w = windows_for(duration)
    rows = [r for r in recording.device if t0 <= r.t <= t1]
    token_t = np.array([t for t, _ in recording.tokens if t0 <= t <= t1], dtype=np.float64)
    token_n = np.array([n for t, n in recording.tokens if t0 <= t <= t1], dtype=np.float64)
    total_tokens = int(token_n.sum())
    gpu_energy = _energy(rows, "gpu")
    host_energy = _energy(rows, "host")
    first_tokens = [r.first_token_s for r in recording.requests if r.first_token_s is not None]

    def tokens_between(a: float, b: float, last: bool = False) -> int:
        inside = (token_t >= a) & ((token_t <= b) if last else (token_t < b))
        return int(token_n[inside].sum())

    def rate(a: float, b: float, last: bool = False) -> float | None:
        return tokens_between(a, b, last) / (b - a) if b > a else None

    first_rate = rate(t0, t0 + w.length_s)
    last_rate = rate(t1 - w.length_s, t1, last=True)
    intervals = []
    n_intervals = max(1, math.ceil(duration / w.interval_s - 1e-9)) if duration > 0 else 0
    for i in range(n_intervals):
        a = t0 + i * w.interval_s
        b = min(t1, a + w.interval_s)
        last = i == n_intervals - 1
        in_rows = [r for r in rows if a <= r.t < b or (last and r.t == b)]
        tokens = tokens_between(a, b, last)
        energy = _energy_between(gpu_energy, a, b)
        intervals.append({
            "start_s": round(a - t0, 3), "end_s": round(b - t0, 3), "tokens": tokens,
            "tokens_per_s": _round(tokens / (b - a) if b > a else None),
            "temperature_c": _round(_mean([r.temperature_c for r in in_rows])),
            "power_w": _round(_mean([r.power_w for r in in_rows])),
            "energy_j": _round(energy),
            "joules_per_token": _round(energy / tokens if energy is not None and tokens else None),
            "throttled_s": _round(_throttled_seconds(rows, a, b)),
        })
    steady = [r for r in rows if r.t >= t1 - w.length_s]
    return {
        "version": REPORT_VERSION,
        "started_at": _iso(t0), "started": t0, "duration_s": round(duration, 3),
        "model": model, "device": device, "simulated": simulated,
        "settings": settings,
        "ended_by": ended_by, "end_reason": end_reason,
        "requests": len(recording.requests), "tokens": total_tokens, "samples": len(rows),
        "first_throttle": _first_throttle(rows, t0),
        "first_power_cap": _first_event(rows, t0, "SwPowerCap"),
        "steady_state": {
            "basis": w.last_basis, "window_s": round(w.length_s, 3),
            "temperature_c": _round(_mean([r.temperature_c for r in steady])),
            "power_w": _round(_mean([r.power_w for r in steady])),
        },
        "tokens_per_s": {
            "first_basis": w.first_basis, "last_basis": w.last_basis,
            "window_s": round(w.length_s, 3),
            "first": _round(first_rate), "last": _round(last_rate),
            "change_percent": _round(100.0 * (last_rate - first_rate) / first_rate
                                     if first_rate and last_rate is not None else None),
            "overall": _round(total_tokens / duration if duration > 0 else None),
        },
        "first_token_s": {
            "mean": _round(float(np.mean(first_tokens)) if first_tokens else None, 4),
            "p95": _round(float(np.percentile(first_tokens, 95)) if first_tokens else None, 4),
        },
        "energy": _energy_report(gpu_energy, total_tokens),
        "host_energy": _energy_report(host_energy, total_tokens),
        "interval_s": round(w.interval_s, 3),
        "intervals": intervals,
        "events": [{"at_s": round(e.t - t0, 3), "kind": e.kind, "text": e.text}
                   for e in recording.events],
    }


# -- energy ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Cumulative:
    """Energy used since the first sample, at each sample time (for any sub-interval)."""

    source: str
    times: FloatArray
    joules: FloatArray

    @property
    def total(self) -> float:
        return float(self.joules[-1] - self.joules[0])


def _energy(rows: Sequence[DeviceRow], which: str) -> _Cumulative | None:
    if which == "gpu":
        counter = [(r.t, r.total_energy_mj) for r in rows if r.total_energy_mj is not None]
        if len(counter) >= 2:
            t = np.array([c[0] for c in counter])
            mj = np.array([c[1] for c in counter], dtype=np.float64)
            return _Cumulative("NVML total-energy counter", t, (mj - mj[0]) / 1000.0)
        power = [(r.t, r.power_w) for r in rows if r.power_w is not None]
        source = "GPU power integrated over time"
    else:
        power = [(r.t, r.host_power_w) for r in rows if r.host_power_w is not None]
        source = "host package power (RAPL) integrated over time"
    if len(power) < 2:
        return None
    t = np.array([p[0] for p in power])
    w = np.array([p[1] for p in power], dtype=np.float64)
    steps = np.diff(t) * (w[1:] + w[:-1]) / 2.0
    return _Cumulative(source, t, np.concatenate(([0.0], np.cumsum(steps))))


def _energy_between(energy: _Cumulative | None, a: float, b: float) -> float | None:
    if energy is None or b <= a:
        return None
    ends = np.interp([a, b], energy.times, energy.joules)
    return float(ends[1] - ends[0])


def _energy_report(energy: _Cumulative | None, tokens: int) -> dict[str, Any]:
    if energy is None:
        return {"source": None, "joules": None, "joules_per_token": None,
                "text": "not reported"}
    joules = energy.total
    per_token = joules / tokens if tokens else None
    text = f"{joules:.1f} J" + (f", {per_token:.3f} J/token" if per_token is not None else "")
    return {"source": energy.source, "joules": _round(joules, 3),
            "joules_per_token": _round(per_token, 5), "text": f"{text} ({energy.source})"}


# -- throttling ------------------------------------------------------------------------------------

def _first_throttle(rows: Sequence[DeviceRow], t0: float) -> dict[str, Any] | None:
    for r in rows:
        if r.throttle_reasons:
            return {"after_s": round(r.t - t0, 3), "at": r.t,
                    "reason": ", ".join(r.throttle_reasons),
                    "temperature_c": _round(r.temperature_c), "power_w": _round(r.power_w)}
    return None


def _first_event(rows: Sequence[DeviceRow], t0: float, event: str) -> dict[str, Any] | None:
    for r in rows:
        if r.clock_events and event in r.clock_events:
            return {"after_s": round(r.t - t0, 3), "at": r.t, "reason": event,
                    "temperature_c": _round(r.temperature_c), "power_w": _round(r.power_w)}
    return None


def _throttled_seconds(rows: Sequence[DeviceRow], a: float, b: float) -> float:
    """Time in [a, b) spent after a sample that reported a throttle reason (until the next)."""
    total = 0.0
    for r, nxt in itertools.pairwise(rows):
        if r.throttle_reasons:
            lo, hi = max(a, r.t), min(b, nxt.t)
            total += max(0.0, hi - lo)
    return total


# -- saving and reopening -----------------------------------------------------------------------

@dataclass
class SoakRun:
    """A saved run: its report and its samples."""

    folder: Path
    report: dict[str, Any]
    series: SoakSeries

    @property
    def label(self) -> str:
        return f"{self.report.get('model', '?')} {self.report.get('started_at', '')}"


def soak_dir() -> Path:
    """Where runs are saved: <user data>/soak/."""
    path = data_dir() / "soak"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_run(report: dict[str, Any], recording: SoakRecording,
             folder: Path | None = None) -> SoakRun:
    """Write report.json and samples.csv into folder (default: a new folder in soak_dir())."""
    if folder is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(report["started"]))
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(report["model"]))
        folder = soak_dir() / f"{stamp}-{name}"
        n = 1
        while folder.exists():
            n += 1
            folder = soak_dir() / f"{stamp}-{name}-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    series = series_of(recording)
    write_csv(series, folder / SAMPLES_FILE)
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return SoakRun(folder, report, series)


def load_run(path: Path | str) -> SoakRun:
    """Reopen a saved run (its folder, or its report.json). ValueError names the bad file."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    report_path = folder / REPORT_FILE
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{report_path}: cannot be read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{report_path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(report, dict) or report.get("version") != REPORT_VERSION:
        raise ValueError(f"{report_path}: not a vrampilot soak report (version "
                         f"{REPORT_VERSION})")
    try:
        series = read_csv(folder / SAMPLES_FILE)
    except OSError as exc:
        raise ValueError(f"{folder / SAMPLES_FILE}: cannot be read "
                         f"({exc.strerror or exc})") from None
    return SoakRun(folder, report, series)


# -- text ------------------------------------------------------------------------------------------

def describe(report: dict[str, Any]) -> str:
    """The report for people (the CLI's output, the GUI's summary)."""
    s = report["settings"]
    lines = [f"Soak of {report['model']} on {report['device']}"
             + (" (simulated)" if report["simulated"] and "simulated" not in report["device"]
                else "")
             + f": {report['duration_s']:.1f} s, concurrency {s['concurrency']}, "
               f"~{s['prompt_tokens']} prompt tokens, {s['max_tokens']} max tokens",
             f"Ended: {report['end_reason']}",
             f"Requests {report['requests']}, tokens {report['tokens']}"]
    ft = report["first_throttle"]
    lines.append("First throttle: " + (f"after {ft['after_s']:.1f} s ({ft['reason']}, "
                                       f"{_fmt(ft['temperature_c'], ' C')})" if ft
                                       else "none during the run"))
    pc = report["first_power_cap"]
    if pc:
        lines.append(f"First power cap: after {pc['after_s']:.1f} s ({_fmt(pc['power_w'], ' W')})")
    ss = report["steady_state"]
    lines.append(f"Steady state ({ss['basis']}): {_fmt(ss['temperature_c'], ' C')}, "
                 f"{_fmt(ss['power_w'], ' W')}")
    tp = report["tokens_per_s"]
    change = tp["change_percent"]
    lines.append(f"Tokens/s: {_fmt(tp['first'])} ({tp['first_basis']}) -> {_fmt(tp['last'])} "
                 f"({tp['last_basis']})" + (f", {change:+.1f} %" if change is not None else ""))
    fts = report["first_token_s"]
    if fts["mean"] is not None:
        lines.append(f"First token: mean {fts['mean'] * 1000:.0f} ms, "
                     f"p95 {fts['p95'] * 1000:.0f} ms")
    lines.append(f"Energy: {report['energy']['text']}")
    lines.append(f"Host energy: {report['host_energy']['text']}")
    lines.append(f"Per interval ({report['interval_s']:.1f} s):")
    lines.append("  start     tok/s     temp     power   J/token  throttled")
    for iv in report["intervals"]:
        lines.append(f"  {iv['start_s']:6.1f}s {_fmt(iv['tokens_per_s']):>8} "
                     f"{_fmt(iv['temperature_c'], ' C'):>8} {_fmt(iv['power_w'], ' W'):>9} "
                     f"{_fmt(iv['joules_per_token'], '', 3):>9} {iv['throttled_s'] or 0:6.1f}s")
    for e in report["events"]:
        lines.append(f"  [{e['at_s']:.1f} s] {e['kind']}: {e['text']}")
    return "\n".join(lines)


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "not reported" if value is None else f"{value:.{digits}f}{unit}"


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(known)) if known else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))

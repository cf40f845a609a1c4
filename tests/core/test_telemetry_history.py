"""TelemetryHistory: ring-buffer wrap-around, window queries, views, CSV round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.telemetry.history import TelemetryHistory, sample_metrics
from core.telemetry.snapshot import GpuSnapshot, HostSnapshot, Sample


def host(t: float, cpu: float = 10.0) -> HostSnapshot:
    return HostSnapshot(timestamp=t, ram_total_bytes=100, ram_used_bytes=40,
                        ram_available_bytes=60, swap_total_bytes=0, swap_used_bytes=0,
                        cpu_percent=cpu)


def gpu(t: float, temp: float | None) -> GpuSnapshot:
    return GpuSnapshot(timestamp=t, index=0, name="g", simulated=True, vram_total_bytes=1000,
                       vram_used_bytes=250, vram_free_bytes=750, temperature_c=temp)


def filled(capacity: int, rows: int) -> TelemetryHistory:
    h = TelemetryHistory(capacity)
    for i in range(rows):
        h.append_values(float(i), {"m": float(i) * 10})
    return h


def test_metric_names_from_a_sample() -> None:
    names = sample_metrics(Sample(host(0.0), (gpu(0.0, 50.0),)))
    for name in ("gpu0.vram_used_bytes", "gpu0.temperature_c", "gpu0.power_w",
                 "gpu0.power_limit_w", "gpu0.gpu_util_percent", "host.ram_used_bytes",
                 "host.cpu_percent"):
        assert name in names
    assert math.isnan(names["gpu0.power_w"])  # not reported -> NaN
    assert names["gpu0.temperature_c"] == 50.0


def test_before_wrapping_window_is_a_view() -> None:
    h = filled(10, 6)
    times, values = h.window("m", 2.5)
    assert times.tolist() == [3.0, 4.0, 5.0]
    assert values.tolist() == [30.0, 40.0, 50.0]
    assert np.shares_memory(values, h._columns["m"])
    assert len(h) == 6


def test_wrap_around_keeps_the_newest_capacity_rows() -> None:
    h = filled(5, 13)  # rows 8..12 survive
    times, values = h.window("m")
    assert times.tolist() == [8.0, 9.0, 10.0, 11.0, 12.0]
    assert values.tolist() == [80.0, 90.0, 100.0, 110.0, 120.0]
    assert len(h) == 5
    assert h.latest("m") == 120.0


def test_window_inside_the_newest_segment_after_wrap_is_a_view() -> None:
    h = filled(5, 13)  # memory: [10, 11, 12, 8, 9]; newest segment is slots 0..2
    times, values = h.window("m", 1.5)
    assert times.tolist() == [11.0, 12.0]
    assert np.shares_memory(values, h._columns["m"])


def test_window_straddling_the_wrap_point_is_concatenated() -> None:
    h = filled(5, 13)
    times, values = h.window("m", 3.0)
    assert times.tolist() == [9.0, 10.0, 11.0, 12.0]
    assert values.tolist() == [90.0, 100.0, 110.0, 120.0]
    assert not np.shares_memory(values, h._columns["m"])


def test_window_longer_than_history_returns_everything() -> None:
    h = filled(5, 13)
    assert h.window("m", 1e9)[0].tolist() == [8.0, 9.0, 10.0, 11.0, 12.0]
    h = filled(5, 10)  # wrapped exactly: write position back at slot 0
    assert h.window("m", 1e9)[0].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert h.window("m", 0.0)[0].tolist() == [9.0]


@pytest.mark.parametrize("rows", [1, 4, 5, 6, 9, 10, 11, 23])
@pytest.mark.parametrize("seconds", [0.0, 0.5, 1.0, 2.0, 3.7, 4.0, 100.0])
def test_window_matches_a_naive_reference(rows: int, seconds: float) -> None:
    h = filled(5, rows)
    kept = list(range(max(0, rows - 5), rows))
    newest = kept[-1]
    expected = [float(i) for i in kept if i >= newest - seconds]
    assert h.window("m", seconds)[0].tolist() == expected
    assert h.window("m", seconds)[1].tolist() == [x * 10 for x in expected]


@pytest.mark.parametrize("steps", [[1], [3, 1, 4], [2, 0, 5, 6], [12], [7, 7]])
def test_rows_since_gives_each_new_row_once(steps: list[int]) -> None:
    """A reader keeping its row count sees every row appended once, in order, across wraps;
    rows overwritten before it asked are skipped (the oldest stored row comes first)."""
    h = TelemetryHistory(5)
    row, appended = 0, 0
    for n in steps:
        for _ in range(n):
            h.append_values(float(appended), {"m": appended * 10.0})
            appended += 1
        times, values, row = h.rows_since("m", row)
        assert values.tolist() == [t * 10 for t in times.tolist()]
        expected = list(range(max(appended - n, appended - 5), appended))
        assert times.tolist() == [float(i) for i in expected]
    assert row == appended
    assert h.rows_since("m", row)[0].tolist() == []
    assert h.rows_since("m", 0)[0].tolist() == h.window("m")[0].tolist()
    with pytest.raises(KeyError):
        h.rows_since("nope", 0)


def test_empty_history_and_unknown_metric() -> None:
    h = TelemetryHistory(4)
    with pytest.raises(KeyError):
        h.window("nope", 1)
    h.append_values(0.0, {})
    assert h.latest("m") is None
    h.append_values(1.0, {"m": 1.0})
    assert math.isnan(h.window("m")[1][0])  # NaN where it was not yet seen
    assert h.window("m")[1].tolist()[1] == 1.0


def test_metric_appearing_later_is_nan_before_and_missing_later_is_nan() -> None:
    h = TelemetryHistory(8)
    h.append(Sample(host(0.0)))
    h.append(Sample(host(1.0), (gpu(1.0, 60.0),)))
    h.append(Sample(host(2.0), (gpu(2.0, None),)))
    _, temps = h.window("gpu0.temperature_c")
    assert math.isnan(temps[0])
    assert temps[1] == 60.0
    assert math.isnan(temps[2])
    assert h.latest("gpu0.temperature_c") is None
    assert "gpu0.vram_used_bytes" in h.metrics()


def test_clock_stepping_back_keeps_times_sorted() -> None:
    h = TelemetryHistory(8)
    for t in (10.0, 11.0, 5.0, 12.0):
        h.append_values(t, {"m": t})
    times, _ = h.window("m")
    assert times.tolist() == [10.0, 11.0, 11.0, 12.0]


def test_capacity_for_a_rate() -> None:
    assert TelemetryHistory.for_rate(0.5, 3600).capacity == 7200
    assert TelemetryHistory.for_rate(0.1, 3600).capacity == 36000


def test_csv_round_trip(tmp_path: Path) -> None:
    h = TelemetryHistory(4)
    for i in range(7):  # wrapped
        temp = 40.0 + i if i % 2 else None
        h.append(Sample(host(100.0 + i, cpu=i * 1.5), (gpu(100.0 + i, temp),)))
    path = tmp_path / "telemetry.csv"
    h.export_csv(path)
    header = path.read_text().splitlines()[0].split(",")
    assert header[0] == "timestamp"
    assert "gpu0.temperature_c" in header

    back = TelemetryHistory.from_csv(path)
    assert back.metrics() == h.metrics()
    assert len(back) == 4
    for name in h.metrics():
        t1, v1 = h.window(name)
        t2, v2 = back.window(name)
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(v1, v2)  # NaN == NaN here


def test_from_csv_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="timestamp"):
        TelemetryHistory.from_csv(bad)
    bad.write_text("timestamp,m\n1,2,3\n")
    with pytest.raises(ValueError, match=r"x\.csv:2"):
        TelemetryHistory.from_csv(bad)

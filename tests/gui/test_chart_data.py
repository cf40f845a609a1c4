"""The charts' decimation without Qt: PeakBuckets fed new rows a few at a time draws what
decimating all the rows at once draws, and no single sample is lost on the way."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gui.chart_data import PeakBuckets


def whole(x: np.ndarray, y: np.ndarray, width_s: float, start: float) -> PeakBuckets:
    peaks = PeakBuckets(width_s)
    peaks.extend(x, y)
    peaks.trim(start)
    return peaks


def reference(x: np.ndarray, y: np.ndarray, width_s: float, start: float
              ) -> tuple[list[float], list[float]]:
    """The same decimation written plainly, one bucket at a time."""
    xs: list[float] = []
    ys: list[float] = []
    ids = [math.floor(t / width_s) for t in x]
    for bucket in sorted(set(ids)):
        if bucket < math.floor(start / width_s):
            continue
        rows = [i for i, b in enumerate(ids) if b == bucket]
        finite = [float(y[i]) for i in rows if not math.isnan(y[i])]
        xs += [float(x[rows[0]]), float(x[rows[-1]])]
        ys += [min(finite), max(finite)] if finite else [math.nan, math.nan]
    return xs, ys


@pytest.mark.parametrize("seed", range(6))
def test_incremental_decimation_equals_decimating_the_same_rows_at_once(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5_000
    x = 1_000_000.0 + np.cumsum(rng.uniform(0.02, 0.3, n))  # uneven sampling
    y = rng.normal(60, 5, n)
    y[rng.choice(n, 40, replace=False)] = math.nan  # rows where the metric was not reported
    y[1_000:1_200] = math.nan  # a long gap: whole buckets of NaN
    window_s, width_s = 300.0, 300.0 / 150
    peaks = PeakBuckets(width_s)
    i = frame = 0
    while i < n:  # frames bringing 0 to 40 new rows each
        frame += 1
        k = int(rng.integers(0, 41))
        peaks.extend(x[i:i + k], y[i:i + k])
        i += k
        if i:
            start = x[min(i, n) - 1] - window_s
            peaks.trim(start)
            expected = whole(x[:i], y[:i], width_s, start)
            np.testing.assert_array_equal(peaks.xs, expected.xs)
            np.testing.assert_array_equal(peaks.ys, expected.ys)
            np.testing.assert_array_equal(peaks.ids, expected.ids)
            assert peaks.rows == expected.rows == int(np.sum(x[:i] >= math.floor(
                start / width_s) * width_s))
            if frame % 40 == 0 or i == n:  # the plain version is slow: now and then
                ref_x, ref_y = reference(x[:i], y[:i], width_s, start)
                np.testing.assert_array_equal(peaks.xs, ref_x)
                np.testing.assert_array_equal(peaks.ys, ref_y)


@pytest.mark.parametrize("at", [0, 1, 2_999, 17_345, 35_999])
def test_a_single_sample_spike_and_dip_survive_decimation(at: int) -> None:
    n = 36_000  # an hour at 10 Hz, about 600 buckets
    x = 1_700_000_000.0 + np.arange(n) / 10
    y = np.full(n, 60.0)
    y[at] = 104.0
    y[(at + 7_000) % n] = 3.0
    peaks = PeakBuckets(6.0)
    for i in range(0, n, 37):  # fed as frames would, a few rows at a time
        peaks.extend(x[i:i + 37], y[i:i + 37])
    peaks.trim(x[-1] - 3600)
    assert len(peaks.xs) <= 2 * 602
    assert peaks.ys.max() == 104.0
    assert peaks.ys.min() == 3.0
    # Drawn at the spike's own bucket: the peak is where it happened, to a bucket's width.
    spike = int(np.argmax(peaks.ys))
    assert abs(peaks.xs[spike] - x[at]) <= 6.0


def test_a_bucket_of_nan_rows_is_a_gap_and_nan_inside_a_bucket_is_ignored() -> None:
    x = np.arange(12.0)
    y = np.array([1.0, math.nan, 3.0, math.nan, math.nan, math.nan,
                  math.nan, 5.0, 6.0, 7.0, 8.0, 9.0])
    peaks = whole(x, y, 3.0, 0.0)  # buckets [0,3) [3,6) [6,9) [9,12)
    assert peaks.ys[:2].tolist() == [1.0, 3.0]
    assert np.isnan(peaks.ys[2:4]).all()  # drawn as a break in the line
    assert peaks.ys[4:].tolist() == [5.0, 6.0, 7.0, 9.0]
    assert peaks.xs.tolist() == [0.0, 2.0, 3.0, 5.0, 6.0, 8.0, 9.0, 11.0]

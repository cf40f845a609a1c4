"""The soak report's energy and windows, from real device reads through the fake NVML seam:
the GPU's total-energy counter is used where it exists, power is integrated where it does not,
and a board that reports neither says "not reported", never 0 J."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from core.soak.recording import SoakRecording
from core.soak.report import build_report, describe, windows_for
from core.telemetry.host import HostSampler, RaplPackagePower
from core.telemetry.nvml_device import NvmlDevices
from core.telemetry.snapshot import Sample
from tests.core.fake_pynvml import FakeBoard, FakeNvml

SETTINGS = {"minutes": 1.0, "concurrency": 1, "prompt_tokens": 8, "max_tokens": 8,
            "model": "m"}


def record(board: FakeBoard, seconds: int) -> SoakRecording:
    """One sample per second from t = 0 to `seconds`, 10 tokens streamed each second."""
    ticks = itertools.count(0.0, 1.0)
    fake = FakeNvml([board])
    devices = NvmlDevices.open(fake, clock=lambda: next(ticks))
    assert devices is not None
    gpu = devices.devices[0]
    host = HostSampler(clock=lambda: 0.0, rapl=RaplPackagePower(directory=_missing()))
    recording = SoakRecording(started=0.0)
    for t in range(seconds + 1):
        recording.on_sample(Sample(host.sample(), (gpu.sample(),)))
        if t:
            recording.add_tokens(t - 0.5, 10)
        board.total_energy_mj += 150_000  # 150 J per second: 150 W
        board.power_average_mw = board.power_instant_mw = 100_000 + 1000 * t
    recording.ended = float(seconds)
    devices.close()
    return recording


def _missing() -> Path:
    return Path("/nonexistent/intel-rapl:0")  # RAPL unreadable, as for a non-root user


def test_energy_comes_from_the_total_energy_counter_where_the_gpu_has_one() -> None:
    report = build_report(record(FakeBoard(), 10), SETTINGS, model="m", device="d",
                          simulated=False, ended_by="time", end_reason="done")
    assert report["energy"]["source"] == "NVML total-energy counter"
    assert report["energy"]["joules"] == pytest.approx(1500.0)
    assert report["energy"]["joules_per_token"] == pytest.approx(1500.0 / 100)
    assert sum(iv["energy_j"] for iv in report["intervals"]) == pytest.approx(1500.0)


def test_without_the_counter_power_is_integrated_over_time() -> None:
    board = FakeBoard(unsupported={"GetTotalEnergyConsumption"})
    report = build_report(record(board, 10), SETTINGS, model="m", device="d", simulated=False,
                          ended_by="time", end_reason="done")
    assert report["energy"]["source"] == "GPU power integrated over time"
    # Power read at t is 32 W at t=0 (the board's default), then 100 + (t-1) W: trapezoids.
    watts = [32.0] + [100.0 + (t - 1) for t in range(1, 11)]
    exact = sum((a + b) / 2 for a, b in itertools.pairwise(watts))
    assert report["energy"]["joules"] == pytest.approx(exact)


def test_a_board_without_power_or_energy_says_not_reported_never_zero() -> None:
    board = FakeBoard(unsupported={"GetTotalEnergyConsumption", "GetPowerUsage"},
                      unsupported_fields={pytest.importorskip("pynvml").NVML_FI_DEV_POWER_INSTANT})
    report = build_report(record(board, 10), SETTINGS, model="m", device="d", simulated=False,
                          ended_by="time", end_reason="done")
    for key in ("energy", "host_energy"):
        assert report[key]["joules"] is None
        assert report[key]["joules_per_token"] is None
        assert report[key]["text"] == "not reported"
    assert all(iv["energy_j"] is None for iv in report["intervals"])
    assert report["steady_state"]["power_w"] is None
    text = describe(report)
    assert "Energy: not reported" in text
    assert " 0 J" not in text
    assert "0.0 J" not in text


def test_windows_are_a_minute_for_long_runs_and_a_fifth_for_short_ones() -> None:
    long, short = windows_for(600.0), windows_for(30.0)
    assert (long.length_s, long.interval_s, long.last_basis) == (60.0, 60.0, "last minute")
    assert short.length_s == pytest.approx(6.0)
    assert short.interval_s == pytest.approx(6.0)
    assert short.last_basis.startswith("last 20 %")


def test_tokens_per_s_first_against_last_window() -> None:
    recording = record(FakeBoard(), 10)
    recording.add_tokens(9.9, 20)  # a burst at the end
    report = build_report(recording, SETTINGS, model="m", device="d", simulated=False,
                          ended_by="time", end_reason="done")
    rates = report["tokens_per_s"]
    assert rates["first"] == pytest.approx(20 / 2.0)  # deltas at 0.5 and 1.5 s in the first 2 s
    assert rates["last"] == pytest.approx(40 / 2.0)  # 8.5, 9.5 and the burst at 9.9 s
    assert rates["change_percent"] == pytest.approx(100.0)
    assert report["tokens"] == 120

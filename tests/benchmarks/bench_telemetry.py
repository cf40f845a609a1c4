"""Telemetry benchmark: CPU share of sampling + alerts, history memory, window query time.

Not run by pytest. Run it directly (``.venv/bin/python -m tests.benchmarks.bench_telemetry``) or
import ``run()`` from a bench runner. Targets (issue 3): sampling plus alert evaluation at 10 Hz
under 1 % of one core; 1 h of 10 Hz history for all charted metrics under 20 MB; a window query of
the last hour under 1 ms.

The GPU here is the simulated RTX 4090 Laptop (the real NVML costs ~0.1 ms per sample on that
card, MangoHud PR #2104). A baseline thread that only wakes at the same rate shows the cost of
waking up alone.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from core.telemetry.activity import EngineActivity
from core.telemetry.config import load_monitoring_config
from core.telemetry.history import TelemetryHistory
from core.telemetry.host import HostSampler
from core.telemetry.sampler import Sampler, open_gpu_devices

Figure = dict[str, Any]


def _figure(values: list[float], unit: str) -> Figure:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "unit": unit}


# Start-up (the history's first-tick allocation, ~5 MB of NaN fill) is a one-off, left out of the
# steady-state share: the measurement starts this long after start().
WARM_UP_S = 1.0


def _cpu_share(start: Callable[[], None], stop: Callable[[], None], seconds: float) -> float:
    """Process CPU time / wall time in the steady state, in percent of one core."""
    start()
    time.sleep(WARM_UP_S)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)  # the main thread idles: what it costs is the thread under test
    share = 100.0 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    stop()
    return share


def sampler_cpu_percent(hz: float, seconds: float) -> float:
    activity = EngineActivity()
    activity.set_loaded("demo", 6 * 1024**3)
    activity.stream_started()  # a busy GPU: alerts have something to evaluate
    monitoring = load_monitoring_config(
        {"hardware_monitoring": {"interval_seconds": 1.0 / hz}}).hardware_monitoring
    sampler = Sampler(open_gpu_devices("rtx4090-laptop", activity), HostSampler(), monitoring)
    try:
        return _cpu_share(sampler.start, sampler.stop, seconds)
    finally:
        sampler.close()


def idle_thread_cpu_percent(hz: float, seconds: float) -> float:
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(1.0 / hz):
            pass

    thread = threading.Thread(target=loop, daemon=True)

    def halt() -> None:
        stop.set()
        thread.join()

    return _cpu_share(thread.start, halt, seconds)


def tick_microseconds(ticks: int = 2000) -> list[float]:
    """Cost of one sample_once (host + simulated GPU + history + alerts), in microseconds."""
    clock = [0.0]
    activity = EngineActivity()
    activity.stream_started()
    monitoring = load_monitoring_config().hardware_monitoring
    sampler = Sampler(open_gpu_devices("rtx4090-laptop", activity, clock=lambda: clock[0]),
                      HostSampler(clock=lambda: clock[0]), monitoring)
    out = []
    for _ in range(ticks):
        clock[0] += 0.1
        t0 = time.perf_counter()
        sampler.sample_once()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def nvml_sample_microseconds(process_poll_every: int, samples: int = 3000) -> list[float]:
    """One NvmlGpu.sample through the fake NVML (tests/core/fake_pynvml.py): our Python around
    the driver (decoding, plausibility, the process list named with psutil), not the driver's
    own ~0.1 ms. Three processes hold memory: this one, a child of ours and init (not ours)."""
    import os
    import subprocess
    import sys

    from core.telemetry.nvml_device import NvmlDevices
    from tests.core.fake_pynvml import GIB, FakeBoard, FakeNvml

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        board = FakeBoard(compute_procs=[(child.pid, 3 * GIB), (1, GIB)],
                          graphics_procs=[(os.getpid(), None)], clock_events=0x4 | 0x20)
        devices = NvmlDevices.open(FakeNvml([board]), process_poll_every=process_poll_every)
        assert devices is not None
        (gpu,) = devices.devices
        gpu.sample()  # the static reads (name, max clocks, throttle temperature) happen once
        out = []
        for _ in range(samples):
            t0 = time.perf_counter()
            gpu.sample()
            out.append((time.perf_counter() - t0) * 1e6)
        devices.close()
        return out
    finally:
        child.kill()
        child.wait()


def full_hour_history(hz: float = 10.0, wrap_offset: int = 0) -> TelemetryHistory:
    """1 h at hz of every charted metric of the host and one GPU, wrapped by wrap_offset rows."""
    monitoring = load_monitoring_config(
        {"hardware_monitoring": {"interval_seconds": 1.0 / hz}}).hardware_monitoring
    clock = [0.0]
    activity = EngineActivity()
    sampler = Sampler(open_gpu_devices("rtx4090-laptop", activity, clock=lambda: clock[0]),
                      HostSampler(clock=lambda: clock[0]), monitoring)
    history = sampler.history
    first = sampler.sample_once()  # one real sample, then its values at every time step
    from core.telemetry.history import sample_metrics

    values = sample_metrics(first)
    for i in range(1, history.capacity + wrap_offset):
        history.append_values(i / hz, values)
    return history


def window_microseconds(history: TelemetryHistory, metric: str, seconds: float,
                        repeats: int = 2000) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        history.window(metric, seconds)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def run(seconds_per_rate: float = 10.0, repeats: int = 3) -> dict[str, Figure]:
    """All figures as {name: {min, median, max, unit}}; baselines are named ``baseline_*``."""
    figures: dict[str, Figure] = {}
    each = seconds_per_rate / repeats
    for hz in (2, 10):
        figures[f"sampling_alerts_cpu_{hz}hz"] = _figure(
            [sampler_cpu_percent(hz, each) for _ in range(repeats)], "% of one core")
        figures[f"baseline_idle_thread_cpu_{hz}hz"] = _figure(
            [idle_thread_cpu_percent(hz, each) for _ in range(repeats)], "% of one core")
    figures["tick_cost"] = _figure(tick_microseconds(), "us per sample")
    # The process list's cost, amortised as the sampler polls it (every 10th sample by default),
    # against the same sample with the list never re-read.
    every_10th = nvml_sample_microseconds(10)
    # Mean over each run of 10 samples: one of them re-reads the list (a median would hide it).
    figures["nvml_sample_processes_every_10th"] = _figure(
        [statistics.fmean(every_10th[i:i + 10]) for i in range(0, len(every_10th) - 9, 10)],
        "us per sample (mean of 10)")
    figures["nvml_sample_processes_every_sample"] = _figure(nvml_sample_microseconds(1),
                                                            "us per sample")
    without = nvml_sample_microseconds(10**9)
    figures["baseline_nvml_sample_without_processes"] = _figure(
        [statistics.fmean(without[i:i + 10]) for i in range(0, len(without) - 9, 10)],
        "us per sample (mean of 10)")
    aligned = full_hour_history()
    mb = aligned.nbytes() / 1e6
    figures["history_1h_10hz_memory"] = _figure([mb], "MB")
    figures["history_1h_10hz_metrics"] = _figure([float(len(aligned.metrics()))], "metrics")
    figures["window_last_hour_view"] = _figure(
        window_microseconds(aligned, "gpu0.temperature_c", 3600), "us")
    wrapped = full_hour_history(wrap_offset=aligned.capacity // 2)
    figures["window_last_hour_wrapped"] = _figure(
        window_microseconds(wrapped, "gpu0.temperature_c", 3600), "us")
    figures["window_last_minute_wrapped"] = _figure(
        window_microseconds(wrapped, "gpu0.temperature_c", 60), "us")
    figures["baseline_numpy_copy_36000"] = _figure(
        window_microseconds_copy(aligned.capacity), "us")
    return figures


def window_microseconds_copy(rows: int, repeats: int = 2000) -> list[float]:
    """What copying one hour of one metric costs, for comparison with a view."""
    import numpy as np

    data = np.zeros(rows)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        data.copy()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def main() -> None:
    for name, fig in run().items():
        print(f"{name:36} min {fig['min']:10.3f}  median {fig['median']:10.3f}  "
              f"max {fig['max']:10.3f}  {fig['unit']}")


if __name__ == "__main__":
    main()

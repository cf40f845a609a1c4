"""Details the safety core's users read: the memory wait's error and probes, and the state an alert
keeps (what `active()` reports, what a lost GPU ends)."""

from __future__ import annotations

import psutil
import pytest

from core.manager.memory_wait import GpuSnapshotProbe, HostMemoryProbe, MemoryNotReturnedError
from core.manager.plan import DeviceReading
from core.telemetry.alerts import AlertEvaluator, AlertEvent
from core.telemetry.config import load_monitoring_config
from core.telemetry.snapshot import GpuSnapshot, HostSnapshot, Sample

GIB = 1024**3
HOST = HostSnapshot(0.0, 100, 10, 90, 0, 0, 1.0)


def test_memory_not_returned_names_what_was_free_and_expected() -> None:
    err = MemoryNotReturnedError(6 * GIB, 2 * GIB, 30.0)
    assert (err.expected_free, err.free, err.waited_s) == (6 * GIB, 2 * GIB, 30.0)
    assert str(err) == ("Device memory did not come back after unloading: 2.00 GiB free after "
                        "30.0 s, expected at least 6.00 GiB.")
    unknown = MemoryNotReturnedError(6 * GIB, None, 1.5)
    assert unknown.free is None
    assert "unknown free after 1.5 s" in str(unknown)


def test_host_probe_reads_available_ram() -> None:
    reading = HostMemoryProbe().read()
    vm = psutil.virtual_memory()
    assert reading.total_bytes == vm.total
    assert reading.free_bytes is not None
    assert abs(reading.free_bytes - vm.available) < 0.1 * vm.total
    assert (reading.temperature_c, reading.power_w, reading.simulated) == (None, None, False)


def gpu(t: float, temp: float | None = 50.0, *, lost: bool = False) -> GpuSnapshot:
    total = 16 * GIB
    return GpuSnapshot(timestamp=t, index=0, name="g", simulated=True, vram_total_bytes=total,
                       vram_used_bytes=GIB, vram_free_bytes=total - GIB, temperature_c=temp,
                       power_w=80.0, clock_events=("Idle",), lost=lost)


def test_gpu_probe_passes_the_snapshot_through() -> None:
    reading = GpuSnapshotProbe(lambda: gpu(1.0, 66.0)).read()
    assert reading == DeviceReading(15 * GIB, 16 * GIB, 66.0, 80.0, True)


def evaluator() -> AlertEvaluator:
    return AlertEvaluator(load_monitoring_config({"hardware_monitoring": {"thresholds": {
        "temperature": {"warning": 80, "critical": 87, "hysteresis": 2,
                        "min_duration_seconds": 1}}}}).hardware_monitoring)


def test_active_reports_the_latest_reading_of_the_episode() -> None:
    ev = evaluator()
    for t, temp in ((0.0, 88.0), (1.0, 89.0), (2.0, 90.5)):
        ev.evaluate(Sample(HOST, (gpu(t, temp),)))
    assert ev.active() == [AlertEvent("temperature", "gpu0.temperature_c", "critical", "started",
                                      90.5, 87.0, 0.0, None, 2.0)]


def test_a_lost_gpu_ends_its_other_alerts_and_they_can_start_again() -> None:
    ev = evaluator()
    for t in (0.0, 1.0):
        ev.evaluate(Sample(HOST, (gpu(t, 90.0),)))
    events = ev.evaluate(Sample(HOST, (gpu(2.0, None, lost=True),)))
    ended = [e for e in events if e.kind == "temperature"]
    assert [(e.change, e.level, e.value, e.ended_at, e.at) for e in ended] == [
        ("ended", "critical", 90.0, 2.0, 2.0)]
    assert [(e.kind, e.level) for e in events if e.kind != "temperature"] == [
        ("gpu_lost", "critical")]
    # Back, and hot again: a new episode starts from its own crossing.
    events = []
    for t in (3.0, 4.0):
        events += ev.evaluate(Sample(HOST, (gpu(t, 90.0),)))
    started = [e for e in events if e.kind == "temperature"]
    assert [(e.change, e.started_at, e.at) for e in started] == [("started", 3.0, 4.0)]


@pytest.mark.parametrize("free", [None, 0])
def test_memory_error_formats_edge_values(free: int | None) -> None:
    assert "expected at least 0.00 GiB" in str(MemoryNotReturnedError(0, free, 0.0))

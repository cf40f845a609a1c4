"""The sampler: a tick reads host + GPUs, records history, evaluates alerts, notifies; threads."""

from __future__ import annotations

import threading
import time

import pytest

from core.telemetry.activity import EngineActivity
from core.telemetry.alerts import AlertEvent
from core.telemetry.config import HardwareMonitoring, load_monitoring_config
from core.telemetry.host import HostSampler
from core.telemetry.sampler import Sampler, open_gpu_devices
from core.telemetry.simulated_device import GIB, UnknownProfileError
from core.telemetry.snapshot import Sample
from tests.core.fake_pynvml import FakeBoard, FakeNvml


class DrivenClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def config(interval: float = 0.5) -> HardwareMonitoring:
    return load_monitoring_config(
        {"hardware_monitoring": {"interval_seconds": interval, "history_seconds": 60}}
    ).hardware_monitoring


def test_tick_records_history_and_raises_alerts_from_engine_activity() -> None:
    clock = DrivenClock()
    activity = EngineActivity()
    devices = open_gpu_devices("rtx4090-laptop", activity, clock=clock)
    sampler = Sampler(devices, HostSampler(clock=clock), config())
    assert sampler.history.capacity == 120
    seen: list[tuple[Sample, list[AlertEvent]]] = []
    sampler.subscribe(lambda s, e: seen.append((s, e)))

    first = sampler.sample_once()
    assert first.gpus[0].simulated
    activity.set_loaded("qwen3-30b-a3b-instruct-2507", int(15.5 * GIB))  # 16.1 of 16 GiB
    for _ in range(4):
        clock.now += 0.5
        sampler.sample_once()

    assert len(seen) == 5
    events = [e for _, evs in seen for e in evs]
    assert [(e.kind, e.level) for e in events] == [("vram_overflow", "critical")]
    assert events[0].at == 1_001.5  # exceeded from t=1000.5, 1 s minimum duration
    times, used = sampler.history.window("gpu0.vram_used_bytes", 10)
    assert times.tolist() == [1_000.0 + 0.5 * i for i in range(5)]
    assert used[-1] > used[0]
    assert sampler.latest is seen[-1][0]
    assert [a.kind for a in sampler.alerts.active()] == ["vram_overflow"]


def test_fake_nvml_devices_through_the_sampler() -> None:
    boards = [FakeBoard(), FakeBoard(name="B", temperature_c=70)]
    fake = FakeNvml(boards)
    devices = open_gpu_devices(None, nvml=fake)
    sampler = Sampler(devices, HostSampler(), config())
    sample = sampler.sample_once()
    assert [g.temperature_c for g in sample.gpus] == [45.0, 70.0]
    boards[1].lost = True
    sample = sampler.sample_once()
    assert [g.lost for g in sample.gpus] == [False, True]
    sampler.close()
    assert fake.initialised == 0


def test_no_driver_gives_no_devices() -> None:
    import pynvml

    no_library = FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    assert open_gpu_devices(None, nvml=no_library) == []


def test_unknown_profile() -> None:
    with pytest.raises(UnknownProfileError, match="rtx4090-laptop"):
        open_gpu_devices("rtx9999")


def test_thread_samples_and_stops() -> None:
    devices = open_gpu_devices("rtx4090-laptop")
    sampler = Sampler(devices, HostSampler(), config(0.1))
    ticks = threading.Event()
    threads: set[str] = set()
    count = 0

    def on_sample(sample: Sample, events: list[AlertEvent]) -> None:
        nonlocal count
        threads.add(threading.current_thread().name)
        count += 1
        if count >= 3:
            ticks.set()

    def broken(sample: Sample, events: list[AlertEvent]) -> None:
        raise RuntimeError("a broken view")

    sampler.subscribe(broken)  # must not stop the sampler or the other subscriber
    unsubscribe = sampler.subscribe(on_sample)
    sampler.start()
    sampler.start()  # idempotent
    try:
        assert ticks.wait(5.0), "sampler thread did not tick"
        with pytest.raises(RuntimeError, match="owns the devices"):
            sampler.sample_once()
    finally:
        sampler.stop(timeout=2.0)
    assert not sampler.running
    assert threads == {"vrampilot-sampler"}
    assert len(sampler.history) >= 3
    unsubscribe()
    before = count
    sampler.sample_once()  # allowed again once stopped
    assert count == before


def test_a_fresh_sample_is_taken_after_the_call_by_whoever_owns_the_device() -> None:
    activity = EngineActivity()
    sampler = Sampler(open_gpu_devices("rtx4090-laptop", activity), HostSampler(),
                      config(interval=30.0))
    stopped = sampler.fresh()  # no thread yet: taken here, and recorded like any tick
    assert len(sampler.history) == 1
    assert sampler.latest is stopped
    ticks: list[str] = []
    sampler.subscribe(lambda s, e: ticks.append(threading.current_thread().name))
    sampler.start()
    try:
        for _ in range(3):
            before = len(ticks)
            sample = sampler.fresh(timeout_s=10)
            assert len(ticks) > before  # a tick of its own, not the 30 s pace
            assert sample is sampler.latest
        assert set(ticks) == {"vrampilot-sampler"}
    finally:
        sampler.stop()
    assert not sampler.running


def test_a_subscriber_asking_for_a_fresh_sample_gets_the_one_it_is_given() -> None:
    sampler = Sampler(open_gpu_devices("rtx4090-laptop", EngineActivity()), HostSampler(),
                      config(interval=0.1))
    answers: list[tuple[bool, float]] = []
    done = threading.Event()

    def subscriber(sample: Sample, _events: list[AlertEvent]) -> None:
        started = time.monotonic()
        fresh = sampler.fresh(timeout_s=5)
        answers.append((fresh is sample, time.monotonic() - started))
        done.set()

    sampler.subscribe(subscriber)
    sampler.start()
    try:
        assert done.wait(10)
    finally:
        sampler.stop()
    same, took = answers[0]
    assert same
    assert took < 1.0  # not a wait for a tick its own thread cannot take

"""Sampling loop: one dedicated thread reads the host and every GPU at the configured rate.

That thread is the only caller of the devices (the one NVML owner): whoever needs the device now
(the manager's memory probe, the memory-return wait) asks it for a fresh sample (`fresh`), and
displays read the latest one (`latest`). Each tick it appends to the history, evaluates alerts and
calls the subscribers, from the sampler thread: a GUI marshals the callback to its own thread (a
queued Qt signal), the core never touches widgets. Before the thread starts (the CLI, tests) a
fresh sample is taken on the calling thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from core.telemetry.activity import EngineActivity
from core.telemetry.alerts import AlertEvaluator, AlertEvent
from core.telemetry.config import HardwareMonitoring
from core.telemetry.history import TelemetryHistory
from core.telemetry.host import HostSampler
from core.telemetry.snapshot import GpuSnapshot, Sample

logger = logging.getLogger(__name__)

Subscriber = Callable[[Sample, list[AlertEvent]], None]


class GpuDevice(Protocol):
    """A GPU the sampler can read: real (NvmlGpu) or simulated (SimulatedGpu)."""

    def sample(self) -> GpuSnapshot: ...

    def close(self) -> None: ...


def open_gpu_devices(
    simulate: str | None,
    activity: EngineActivity | None = None,
    *,
    clock: Callable[[], float] = time.time,
    seed: int = 0,
    process_poll_every: int = 10,
    nvml: Any = None,
) -> list[GpuDevice]:
    """The simulated profile's GPU when simulate names one, else every NVIDIA GPU NVML finds.

    No driver or library: an empty list. Unknown profile: UnknownProfileError (lists known ones).
    nvml: the pynvml module to use (default: import it); tests pass a fake.
    """
    if simulate:
        from core.telemetry.simulated_device import SimulatedGpu, load_profile

        profile = load_profile(simulate)
        return [SimulatedGpu(profile, activity or EngineActivity(), clock=clock, seed=seed)]
    from core.telemetry.nvml_device import NvmlDevices

    devices = NvmlDevices.open(nvml, clock=clock, process_poll_every=process_poll_every)
    return list(devices.devices) if devices is not None else []


class SerializedDevice:
    """One device read by one caller at a time: the sampler thread, or (before it starts, or
    after it stops) the thread asking for a fresh sample. The simulated device integrates its
    thermal state on every read."""

    def __init__(self, device: GpuDevice) -> None:
        self._device = device
        self._lock = threading.Lock()

    def sample(self) -> GpuSnapshot:
        with self._lock:
            return self._device.sample()

    def close(self) -> None:
        with self._lock:
            self._device.close()


class Sampler:
    """Reads, records, evaluates and publishes one Sample per tick."""

    def __init__(
        self,
        devices: Sequence[GpuDevice],
        host: HostSampler,
        monitoring: HardwareMonitoring,
        *,
        history: TelemetryHistory | None = None,
        evaluator: AlertEvaluator | None = None,
    ) -> None:
        self.devices = tuple(devices)
        self.interval_seconds = monitoring.interval_seconds
        self.history = history if history is not None else TelemetryHistory(
            monitoring.history_capacity)
        self.alerts = evaluator if evaluator is not None else AlertEvaluator(monitoring)
        self._host = host
        self._subscribers: list[Subscriber] = []
        self._subscribers_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a fresh sample is wanted: tick now
        self._ticked = threading.Condition()
        self._ticks_started = 0
        self._ticks_done = 0
        self._thread: threading.Thread | None = None
        self._latest: Sample | None = None

    @property
    def latest(self) -> Sample | None:
        """The most recent sample (None before the first tick)."""
        return self._latest

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call callback(sample, events) after every tick, on the sampler thread. Returns an
        unsubscribe function."""
        with self._subscribers_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def sample_once(self) -> Sample:
        """One tick on the calling thread (for the CLI and tests). Not while the thread runs."""
        if self.running:
            raise RuntimeError("the sampler thread owns the devices; use subscribe() instead")
        return self._tick()

    def fresh(self, timeout_s: float = 2.0) -> Sample:
        """A sample taken after this call. The sampler thread takes it at once when it runs
        (and keeps its pace from there); otherwise it is taken here. If the thread does not
        deliver within timeout_s (a hung driver), the latest sample."""
        if not self.running:
            return self._tick()
        if threading.current_thread() is self._thread and self._latest is not None:
            return self._latest  # a subscriber asking: the sample it is being given is fresh
        with self._ticked:
            # A tick already under way started before this call: the one after it counts.
            wanted = self._ticks_started + 1
            self._wake.set()
            self._ticked.wait_for(lambda: self._ticks_done >= wanted or not self.running,
                                  timeout_s)
        latest = self._latest
        if latest is None or not self.running:
            return self._tick()
        return latest

    def start(self) -> None:
        """Start the sampler thread (idempotent)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vrampilot-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (at most timeout seconds)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("sampler thread did not stop within %.1f s", timeout)

    def close(self) -> None:
        """Stop sampling and release the devices."""
        self.stop()
        for device in self.devices:
            device.close()

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # one bad tick must not kill monitoring
                logger.exception("telemetry tick failed")
            deadline += self.interval_seconds
            now = time.monotonic()
            if deadline < now:  # fell behind (suspend, slow driver): skip, don't burst
                deadline = now + self.interval_seconds
            if self._wake.wait(deadline - now):  # a fresh sample wanted (or stop)
                self._wake.clear()
                deadline = time.monotonic() - self.interval_seconds  # tick now, pace from it

    def _tick(self) -> Sample:
        with self._ticked:
            self._ticks_started += 1
        try:
            sample = self._read()
        finally:
            with self._ticked:
                self._ticks_done += 1
                self._ticked.notify_all()
        return sample

    def _read(self) -> Sample:
        host = self._host.sample()
        sample = Sample(host=host, gpus=tuple(d.sample() for d in self.devices))
        self.history.append(sample)
        events = self.alerts.evaluate(sample)
        self._latest = sample
        with self._subscribers_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(sample, events)
            except Exception:  # a broken view must not stop the sampler
                logger.exception("telemetry subscriber %r failed", callback)
        return sample

"""What a soak run records while it runs: device samples (from the sampler thread) and the real
stream's tokens and first-token times (from the event loop). Appends only, under one lock."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from core.telemetry.alerts import THERMAL_THROTTLE_EVENTS
from core.telemetry.snapshot import Sample


@dataclass(frozen=True)
class DeviceRow:
    """One sampler tick, reduced to what the soak charts and reports. None: not reported."""

    t: float  # wall clock, seconds (the snapshot's own timestamp)
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    sm_clock_mhz: float | None
    mem_clock_mhz: float | None
    gpu_util_percent: float | None
    clock_events: tuple[str, ...] | None
    total_energy_mj: float | None  # NVML's cumulative counter, where the GPU has it
    host_power_w: float | None  # RAPL package power (None when unreadable)

    @property
    def throttle_reasons(self) -> tuple[str, ...]:
        """The clock-event reasons that mean heat or an electrical limit slows the GPU."""
        return tuple(e for e in self.clock_events or () if e in THERMAL_THROTTLE_EVENTS)


@dataclass(frozen=True)
class RequestRow:
    """One finished (or cut-off) request of the soak."""

    started: float
    first_token_s: float | None
    tokens: int
    duration_s: float


@dataclass(frozen=True)
class EventRow:
    """Something that happened during the run: an alert reaction, an advice, the end."""

    t: float
    kind: str
    text: str


class SoakRecording:
    """The raw record of one run. Thread-safe appends; `copy()` for readers on another thread."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.ended: float | None = None
        self._lock = threading.Lock()
        self.device: list[DeviceRow] = []
        self.tokens: list[tuple[float, int]] = []  # (when, new tokens) per streamed delta
        self.requests: list[RequestRow] = []
        self.events: list[EventRow] = []

    def on_sample(self, sample: Sample) -> None:
        """Sampler thread: keep the first GPU (the engine's device), else the host alone."""
        host = sample.host
        gpu = sample.gpus[0] if sample.gpus else None
        if gpu is None:
            row = DeviceRow(host.timestamp, host.cpu_temperature_c, None, None, None, None,
                            host.cpu_percent, None, None, host.package_power_w)
        else:
            row = DeviceRow(gpu.timestamp, gpu.temperature_c, gpu.power_w, gpu.power_limit_w,
                            _num(gpu.sm_clock_mhz), _num(gpu.mem_clock_mhz),
                            gpu.gpu_util_percent, gpu.clock_events,
                            _num(gpu.total_energy_mj), host.package_power_w)
        with self._lock:
            self.device.append(row)

    def add_tokens(self, at: float, count: int) -> None:
        if count > 0:
            with self._lock:
                self.tokens.append((at, count))

    def add_request(self, row: RequestRow) -> None:
        with self._lock:
            self.requests.append(row)

    def add_event(self, at: float, kind: str, text: str) -> None:
        with self._lock:
            self.events.append(EventRow(at, kind, text))

    def copy(self) -> SoakRecording:
        """A consistent snapshot of everything recorded so far."""
        with self._lock:
            other = SoakRecording(self.started)
            other.ended = self.ended
            other.device = list(self.device)
            other.tokens = list(self.tokens)
            other.requests = list(self.requests)
            other.events = list(self.events)
        return other


def _num(value: int | float | None) -> float | None:
    return None if value is None else float(value)

"""Prometheus metrics of the local API, in a registry of its own (never the process-global one).

Device gauges and the scheduler's queue are read when /metrics is scraped; switch durations and
per-request figures are observed as they happen (manager events, scheduler records).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.manager.events import SwitchEvent, SwitchPhase
from core.scheduler import RequestRecord, RequestScheduler
from core.telemetry.snapshot import gpu_label

if TYPE_CHECKING:
    from core.runtime import Runtime

SWITCH_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300)
TPS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _LiveCollector(Collector):
    """Gauges read at scrape time: device memory, temperature, power, active model, queue."""

    def __init__(self, runtime: Runtime, scheduler: RequestScheduler) -> None:
        self._runtime = runtime
        self._scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily("vrampilot_vram_used_bytes", "Device memory in use",
                                 labels=["device"])
        total = GaugeMetricFamily("vrampilot_vram_total_bytes", "Device memory in total",
                                  labels=["device"])
        temp = GaugeMetricFamily("vrampilot_temperature_celsius", "Device temperature",
                                 labels=["device"])
        power = GaugeMetricFamily("vrampilot_power_watts", "Device power draw",
                                  labels=["device"])
        for gpu in self._runtime.gpu_snapshots():
            name = gpu_label(gpu.index)
            for family, value in ((used, gpu.vram_used_bytes), (total, gpu.vram_total_bytes),
                                  (temp, gpu.temperature_c), (power, gpu.power_w)):
                if value is not None:  # a metric the device does not report is left out
                    family.add_metric([name], float(value))
        reading = self._runtime.probe.read()
        if not self._runtime.devices and reading.total_bytes is not None:
            # vLLM's CPU build: the engine's memory is the host's RAM.
            used.add_metric(["host"], float(reading.total_bytes - (reading.free_bytes or 0)))
            total.add_metric(["host"], float(reading.total_bytes))
        yield from (used, total, temp, power)

        manager = self._runtime.manager
        active = GaugeMetricFamily("vrampilot_active_model", "1 for the model loaded now",
                                   labels=["model"])
        if manager.active_model is not None:
            active.add_metric([manager.active_model], 1.0)
        yield active
        stats = self._scheduler.stats()
        yield GaugeMetricFamily("vrampilot_queue_length",
                                "Requests waiting for a switch or a concurrency slot",
                                value=stats.queued)
        yield GaugeMetricFamily("vrampilot_requests_running", "Requests generating now",
                                value=stats.running)
        yield GaugeMetricFamily("vrampilot_request_rate_per_second",
                                "Requests admitted per second over the last minute",
                                value=stats.requests_per_s)
        limit = manager.state.max_concurrent
        if limit is not None:
            yield GaugeMetricFamily("vrampilot_max_concurrent_requests",
                                    "The concurrency limit the thermal policy set", value=limit)


class ApiMetrics:
    """The registry behind GET /metrics; `close()` stops observing."""

    def __init__(self, runtime: Runtime, scheduler: RequestScheduler) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_LiveCollector(runtime, scheduler))
        self.switch_seconds = Histogram(
            "vrampilot_switch_duration_seconds", "Duration of model switches",
            ["outcome"], buckets=SWITCH_BUCKETS, registry=self.registry)
        self.tokens_per_s = Histogram(
            "vrampilot_generation_tokens_per_second", "Decode speed of finished requests",
            ["model"], buckets=TPS_BUCKETS, registry=self.registry)
        self.first_token_s = Histogram(
            "vrampilot_time_to_first_token_seconds", "Time to the first token (after admission)",
            ["model"], buckets=TTFT_BUCKETS, registry=self.registry)
        self.requests = Counter(
            "vrampilot_requests", "Requests by model and outcome", ["model", "outcome"],
            registry=self.registry)
        self._unsubscribe: list[Callable[[], None]] = [
            runtime.manager.subscribe(self._on_switch), scheduler.subscribe(self._on_request)]

    def _on_switch(self, event: SwitchEvent) -> None:
        if event.phase in (SwitchPhase.READY, SwitchPhase.FAILED) and event.switch_id:
            self.switch_seconds.labels(event.phase.value).observe(event.elapsed_s)

    def _on_request(self, record: RequestRecord) -> None:
        self.requests.labels(record.model, record.outcome).inc()
        model = record.active or record.model
        if record.tokens_per_s is not None:
            self.tokens_per_s.labels(model).observe(record.tokens_per_s)
        if record.first_token_s is not None:
            self.first_token_s.labels(model).observe(record.first_token_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        self._unsubscribe.clear()

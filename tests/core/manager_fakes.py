"""Shared pieces for the manager tests: a driven clock, a simulated 16 GB GPU, an in-test engine.

Why an in-test engine: a real vLLM load takes ~20 s here, and the property tests run hundreds of
switches. `RecordingEngine` implements the Engine protocol honestly: it holds no memory itself; the
manager reports the loaded bytes to EngineActivity, which is what drives the simulated device's VRAM
(the hardware seam). It can be told to fail, to block until released, and it keeps a class-wide
registry of engines currently loaded so a test can assert "at most one, at every instant".
The real engine is exercised in test_manager_vllm.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from core.engine.base import GenerationDelta, GenerationRequest, LoadSpec
from core.history_store import HistoryStore
from core.manager.fit import estimator_fit
from core.manager.manager import ModelManager
from core.manager.memory_wait import GpuSnapshotProbe
from core.manager.plan import DeviceReading, FitEstimate, FitEstimator
from core.models.catalog import Catalog, ModelEntry, load_catalog
from core.models.estimator import Estimator
from core.telemetry.activity import EngineActivity
from core.telemetry.config import ModelSwitching
from core.telemetry.simulated_device import SimulatedGpu, load_profile

GIB = 1024**3
CASCADE = ("qwen3-30b-a3b-instruct-2507", "qwen3-14b", "qwen3-8b", "qwen3-4b-instruct-2507",
           "demo-tiny-a", "demo-tiny-b", "remote")


async def until(condition: Callable[[], object]) -> None:
    """Let the other tasks run one loop step at a time until condition holds (a state that lasts
    only between two steps is seen; an event would be seen a step late)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class FixedFit:
    """An estimator that needs `need` bytes whatever the memory, and remembers each question
    (free, total, buffer) it was asked."""

    def __init__(self, need: int, fits: bool = True, detail: str = "") -> None:
        self.need, self.fits, self.detail = need, fits, detail
        self.seen: list[tuple[int | None, int | None, int]] = []

    def __call__(self, entry: ModelEntry, free: int | None, total: int | None,
                 buffer: int) -> FitEstimate:
        self.seen.append((free, total, buffer))
        return FitEstimate(self.fits, self.need, 4096, 0.5, self.detail)


class DrivenClock:
    """Time moves only when a test (or the manager's injected sleep) advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class EngineScript:
    """What the next loads of a model do: a list of exceptions (None = succeed), then succeed."""

    failures: dict[str, list[BaseException | None]] = field(default_factory=dict)
    block: dict[str, asyncio.Event] = field(default_factory=dict)
    load_seconds: float = 2.0

    # What the next generations (the warm-up is one) of a model do, like `failures`.
    generation_failures: dict[str, list[BaseException | None]] = field(default_factory=dict)

    def fail_next(self, model_id: str, *errors: BaseException | None) -> None:
        self.failures.setdefault(model_id, []).extend(errors)

    def fail_next_generation(self, model_id: str, *errors: BaseException | None) -> None:
        self.generation_failures.setdefault(model_id, []).extend(errors)


class RecordingEngine:
    """Engine protocol implementation for tests (see module docstring)."""

    loaded: ClassVar[set[RecordingEngine]] = set()
    overlap_seen = False
    shutdowns = 0

    def __init__(self, entry: ModelEntry, script: EngineScript, clock: DrivenClock) -> None:
        self.entry = entry
        self.script = script
        self.clock = clock
        self.spec: LoadSpec | None = None
        self.shut = False
        self.generated = 0
        self.died: str | None = None  # like VllmEngine.died: set when its "process" dies
        self.requests: list[GenerationRequest] = []  # every generation asked of it

    @classmethod
    def reset(cls) -> None:
        cls.loaded = set()
        cls.overlap_seen = False
        cls.shutdowns = 0

    async def load(self, spec: LoadSpec) -> None:
        if RecordingEngine.loaded:
            RecordingEngine.overlap_seen = True
        self.spec = spec
        RecordingEngine.loaded.add(self)  # from here until shutdown, it holds the device
        self.clock.now += self.script.load_seconds
        gate = self.script.block.get(spec.model_id)
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        queue = self.script.failures.get(spec.model_id)
        if queue:
            error = queue.pop(0)
            if error is not None:
                raise error

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        self.generated += 1
        self.requests.append(request)
        queue = self.script.generation_failures.get(self.entry.id)
        error = queue.pop(0) if queue else None
        n = request.max_tokens
        for i in range(1, n + 1):
            self.clock.now += 0.01
            await asyncio.sleep(0)
            if error is not None and (i > 1 or n == 1):  # fails mid-stream, after a token
                raise error
            yield GenerationDelta(text=f"t{i} ", tokens=i, elapsed_s=0.01 * i + 0.02,
                                  first_token_s=0.03, finished=i == n,
                                  finish_reason="length" if i == n else None)

    async def abort(self, request_id: str) -> None:
        return None

    async def shutdown(self) -> None:
        if not self.shut:
            self.shut = True
            RecordingEngine.shutdowns += 1
        RecordingEngine.loaded.discard(self)
        await asyncio.sleep(0)

    def is_healthy(self) -> bool:
        return not self.shut and self.died is None

    def crash(self, how: str = "process 4242 was killed by signal SIGKILL") -> None:
        """The engine's process dies on its own (what a SIGKILL of EngineCore does)."""
        self.died = how
        RecordingEngine.loaded.discard(self)  # a dead process holds no memory

    def pids(self) -> tuple[int, ...]:
        return ()


class AdjustableProbe:
    """The simulated GPU's reading, with extra memory taken by 'another process' and optional
    temperature/power overrides (to exercise refusals the thermal model would take minutes for)."""

    def __init__(self, gpu: SimulatedGpu) -> None:
        self._inner = GpuSnapshotProbe(gpu.sample)
        self.other_process_bytes = 0
        self.temperature_c: float | None = None
        self.power_w: float | None = None
        self.reads = 0
        # Called before each reading: lets a test move another program's memory as time goes.
        self.before_read: Callable[[], None] | None = None

    def read(self) -> DeviceReading:
        self.reads += 1
        if self.before_read is not None:
            self.before_read()
        r = self._inner.read()
        free = None if r.free_bytes is None else max(0, r.free_bytes - self.other_process_bytes)
        return DeviceReading(free, r.total_bytes,
                             self.temperature_c if self.temperature_c is not None
                             else r.temperature_c,
                             self.power_w if self.power_w is not None else r.power_w, True)


@dataclass
class Rig:
    manager: ModelManager
    gpu: SimulatedGpu
    probe: AdjustableProbe
    activity: EngineActivity
    history: HistoryStore
    clock: DrivenClock
    script: EngineScript
    catalog: Catalog
    engines: list[RecordingEngine]
    events: list[object]

    def vram_in_use(self) -> int:
        return int(self.gpu.profile.baseline_vram_used_mib * 1024**2) \
            + self.activity.state().loaded_bytes


def make_rig(tmp_path: object, *, switching: ModelSwitching | None = None,
             on_disk: Callable[[ModelEntry], bool] | None = None,
             catalog: Catalog | None = None,
             prefetch: Callable[[Path], object] | None = None,
             engine_class: type[RecordingEngine] | None = None,
             expected_start: Callable[[ModelEntry], str | None] = lambda entry: None,
             watch_interval_s: float = 0.05, fit: FitEstimator | None = None) -> Rig:
    """watch_interval_s: how often the manager reads the engine's health; short, so a test of
    a crash waits tenths, not seconds (the app's is ENGINE_WATCH_INTERVAL_S)."""
    RecordingEngine.reset()
    base = Path(str(tmp_path))
    catalog = catalog or load_catalog(models_dir=base / "models")
    clock = DrivenClock()
    activity = EngineActivity()
    gpu = SimulatedGpu(load_profile("rtx4090-laptop"), activity, clock=clock)
    probe = AdjustableProbe(gpu)
    history = HistoryStore(base / "history.sqlite3")
    script = EngineScript()
    engines: list[RecordingEngine] = []

    def factory(entry: ModelEntry) -> RecordingEngine:
        engine = (engine_class or RecordingEngine)(entry, script, clock)
        engines.append(engine)
        return engine

    settings = switching or ModelSwitching(switch_timeout_seconds=90, max_retries=3,
                                           memory_poll_interval_seconds=0.25,
                                           memory_return_timeout_seconds=30,
                                           fallback_cascade=CASCADE)
    manager = ModelManager(catalog, settings, probe, factory, history, activity,
                           fit or estimator_fit(Estimator(catalog)), clock=clock,
                           sleep=clock.sleep,
                           on_disk=on_disk or (lambda e: not e.is_remote), prefetch=prefetch,
                           expected_start=expected_start, watch_interval_s=watch_interval_s)
    events: list[object] = []
    manager.subscribe(events.append)
    return Rig(manager, gpu, probe, activity, history, clock, script, catalog, engines, events)

"""The single-active-model manager: at most one model loaded, ever; switches behind one lock.

A switch: plan (pure, `plan_switch`), unload the active model, wait until its memory is back
(polling), re-check safety against the device as it is now, load with the fitted context and
utilization (timeout, retries, context retry), warm up, ready. A failure or a refusal moves down
the fallback cascade, so an unload never leaves the user with nothing when anything else can load.
One deadline (`switch_timeout_seconds`) bounds the whole switch, cascade and retries included; at
expiry the previous model is brought back. Every switch, successful or not, is one history row,
committed as it ends.

The active engine is watched: when it dies the manager marks no model active, records a `crashed`
row and emits an event, and the next request loads the model again; a model whose engine died
three times in ten minutes is not reloaded (the crash-loop guard) and requests fall back instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.engine.base import (
    ChatMessage,
    ContextTooLongError,
    Engine,
    EngineDiedError,
    EngineError,
    EngineTimeoutError,
    GenerationRequest,
    InsufficientMemoryError,
    LoadSpec,
)
from core.engine.load_phases import LABELS as LOAD_LABELS
from core.history_store import NO_MODEL, HistoryStore
from core.manager.eta import SwitchEta
from core.manager.events import StateChange, SwitchEvent, SwitchPhase
from core.manager.memory_wait import MemoryNotReturnedError, MemoryProbe, wait_for_memory
from core.manager.plan import (
    DeviceReading,
    FitEstimate,
    FitEstimator,
    SafetyLimits,
    SwitchingSettings,
    SwitchPlan,
    next_models,
    plan_switch,
)
from core.models.catalog import Catalog, ModelEntry
from core.telemetry.activity import EngineActivity

EngineFactory = Callable[[ModelEntry], Engine]
EventCallback = Callable[[SwitchEvent], None]

# Failures worth another attempt at the same model (the engine may just have been slow or the
# memory still draining); anything else moves straight down the cascade.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    EngineTimeoutError, EngineDiedError, InsufficientMemoryError, TimeoutError)
WARMUP_MAX_TOKENS = 2
# The crash-loop guard: this many engine deaths of one model within the window stop its reloads.
CRASH_LOOP_DEATHS = 3
CRASH_LOOP_WINDOW_S = 600.0
# How often the active engine's processes are checked (a death is seen within this, well under 2 s).
ENGINE_WATCH_INTERVAL_S = 0.5

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwitchResult:
    """How a switch request ended.

    outcome: "noop" (already active), "ready" (target loaded), "fallback" (another model loaded
    instead), "failed" (nothing could load; `active` says what is loaded now), "cancelled".
    """

    requested: str
    active: str | None
    outcome: str
    reason: str
    plan: SwitchPlan | None
    total_s: float
    errors: tuple[str, ...] = ()
    history_ids: tuple[int, ...] = ()
    forced: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome in ("noop", "ready", "fallback")


@dataclass(frozen=True)
class ManagerState:
    """A snapshot of the manager for display."""

    active_model: str | None
    loaded_bytes: int
    switching_to: str | None
    phase: SwitchPhase | None
    max_concurrent: int | None
    max_model_len: int | None
    crashing: dict[str, str] = field(default_factory=dict)  # model -> why it is not reloaded


@dataclass
class _Loaded:
    entry: ModelEntry
    engine: Engine
    spec: LoadSpec
    loaded_bytes: int  # what the estimate says the engine takes (reported to EngineActivity)
    measured_bytes: int  # the device's free-memory drop across the load: what must come back


@dataclass
class _Attempt:
    """One switch to one model: what the history row is built from."""

    switch_id: int
    entry: ModelEntry
    reason: str
    from_model: str | None
    started: float
    eta: SwitchEta
    phases: dict[str, float] = field(default_factory=dict)
    attempts: int = 0
    forced: bool = False
    load_phases: dict[str, float] = field(default_factory=dict)  # the engine's load breakdown
    engine_start: str | None = None  # how the load started its engine (ENGINE_STARTS)
    # Where the switch is (for the ETA): its phase and, while loading, the load's phase.
    phase: str = "planning"
    phase_started: float = 0.0
    load_phase: str | None = None  # its ETA is figured as each load phase starts

    @property
    def predicted_s(self) -> float | None:
        return self.eta.total


class SwitchFailed(Exception):
    """One switch to one model did not end ready (internal; carries the outcome for history)."""

    def __init__(self, outcome: str, message: str) -> None:
        self.outcome = outcome
        super().__init__(message)


class _ConcurrencyGate:
    """Limits how many generations run on the engine at once (None: no limit)."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self._running = 0
        self._cond = asyncio.Condition()

    async def set_limit(self, limit: int | None) -> None:
        async with self._cond:
            self.limit = limit
            self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: self.limit is None or self._running < self.limit)
            self._running += 1
        try:
            yield
        finally:
            async with self._cond:
                self._running -= 1
                self._cond.notify_all()


class ModelManager:
    """Owns the one loaded engine. Use from one event loop; `close()` at exit."""

    def __init__(self, catalog: Catalog, switching: SwitchingSettings, memory_probe: MemoryProbe,
                 engine_factory: EngineFactory, history: HistoryStore, activity: EngineActivity,
                 fit_estimator: FitEstimator, *, cascade: Sequence[str] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_disk: Callable[[ModelEntry], bool] | None = None,
                 prefetch: Callable[[Path], object] | None = None,
                 expected_start: Callable[[ModelEntry], str | None] = lambda entry: None,
                 watch_interval_s: float = ENGINE_WATCH_INTERVAL_S) -> None:
        self.catalog = catalog
        self.switching = switching
        self.limits = SafetyLimits.from_settings(switching)
        self.cascade = tuple(cascade if cascade is not None else switching.fallback_cascade)
        for model_id in self.cascade:
            catalog.get(model_id)  # a cascade naming an unknown model is a configuration error
        self._probe = memory_probe
        self._factory = engine_factory
        self._history = history
        self._activity = activity
        self._fit = fit_estimator
        self._clock = clock
        self._sleep = sleep
        self._on_disk = on_disk or catalog.is_on_disk
        # Reads the next model's files into the page cache while the old one shuts down
        # (core.engine.page_cache); None: no read-ahead.
        self._prefetch = prefetch
        # How the next load of a model will start its engine (ENGINE_STARTS; None: unknown), so
        # its ETA is built from switches that started theirs the same way.
        self._expected_start = expected_start
        self._watch_interval_s = watch_interval_s  # how often the loaded engine's health is read
        self._lock = asyncio.Lock()
        self._loaded: _Loaded | None = None
        self._inflight: dict[str, asyncio.Task[SwitchResult]] = {}
        self._last_task: asyncio.Task[SwitchResult] | None = None
        self._subscribers: list[EventCallback] = []
        self._ids = itertools.count(1)
        self._switching_to: str | None = None
        self._phase: SwitchPhase | None = None
        self._gate = _ConcurrencyGate()
        self._closed = False
        self._deaths: dict[str, deque[float]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._stopped_watchers: set[asyncio.Task[None]] = set()
        self._deadline_expired = False
        self._deadline_note = ""
        self._active_private = False

    # -- observation ----------------------------------------------------------------------------
    @property
    def active_model(self) -> str | None:
        return self._loaded.entry.id if self._loaded else None

    @property
    def active_engine(self) -> Engine | None:
        return self._loaded.engine if self._loaded else None

    @property
    def state(self) -> ManagerState:
        loaded = self._loaded
        return ManagerState(loaded.entry.id if loaded else None,
                            loaded.loaded_bytes if loaded else 0, self._switching_to,
                            self._phase, self._gate.limit,
                            loaded.spec.max_model_len if loaded else None,
                            self.crashing_models())

    @property
    def active_private(self) -> bool:
        """Whether the active model was loaded for a private task (never hand it to a remote)."""
        return self._loaded is not None and self._active_private

    def crashing_models(self) -> dict[str, str]:
        """Models the crash-loop guard does not reload now, with why."""
        now = self._clock()
        out: dict[str, str] = {}
        for model_id, deaths in self._deaths.items():
            recent = [t for t in deaths if now - t <= CRASH_LOOP_WINDOW_S]
            if len(recent) >= CRASH_LOOP_DEATHS:
                left = CRASH_LOOP_WINDOW_S - (now - recent[-CRASH_LOOP_DEATHS])
                out[model_id] = (f"its engine died {len(recent)} times in the last "
                                 f"{CRASH_LOOP_WINDOW_S / 60:.0f} minutes; not reloaded for "
                                 f"{left:.0f} s")
        return out

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call back on every switch event; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def emit(self, event: SwitchEvent) -> None:
        """Deliver an event to every subscriber (a failing subscriber does not stop a switch)."""
        for callback in list(self._subscribers):
            with contextlib.suppress(Exception):
                callback(event)

    def needed_bytes(self, model_id: str) -> int | None:
        """The estimator's memory need for a model on this device (None: unknown or remote)."""
        fit = self._full_device_fit(model_id)
        return None if fit is None else fit.needed_bytes

    def model_bytes(self, model_id: str) -> int | None:
        """What the model itself needs (before the CPU build's utilization floor): the size that
        "a smaller model" compares. None: unknown or remote."""
        try:
            fit = self._full_device_fit(model_id)
        except (ValueError, EngineError):
            return None
        return None if fit is None else fit.size_bytes

    def _full_device_fit(self, model_id: str) -> FitEstimate | None:
        entry = self.catalog.get(model_id)
        if entry.is_remote:
            return None
        reading = self._probe.read()
        return self._fit(entry, reading.total_bytes, reading.total_bytes, self.limits.buffer_bytes)

    def next_models(self, current: str, *, private: bool = False,
                    smaller_only: bool = False) -> list[str]:
        """The models to try after `current`, best first, that can load here at all (usable,
        not crash-looping). The one decision of "which model next" (core.manager.plan)."""
        crashing = self.crashing_models()
        return [m for m in next_models(current, self.cascade, self.model_bytes,
                                       smaller_only=smaller_only)
                if m not in crashing and self.is_usable(self.catalog.get(m), private)]

    def smaller_model(self) -> str | None:
        """The alert policy's step-down: the next local model that needs less memory than the
        active one (None: none, or no model is active)."""
        active = self.active_model
        if active is None:
            return None
        # private=True is belt and braces: smaller_only already drops the remote (it has no size).
        found = self.next_models(active, private=True, smaller_only=True)  # pragma: no mutate
        return found[0] if found else None

    def first_fallback(self, target: str, private: bool = False) -> str | None:
        """The Models tab's offer after a refusal: the first next model whose plan passes now."""
        for model_id in self.next_models(target, private=private):
            if self.plan_switch(model_id, private).ok:
                return model_id
        return None

    def remote_configured(self, entry: ModelEntry) -> bool:
        return entry.is_remote and entry.enabled and bool(entry.base_url)

    # -- planning -------------------------------------------------------------------------------
    def plan_switch(self, target: str, private: bool = False, force: bool = False,
                    reading: DeviceReading | None = None) -> SwitchPlan:
        """The plan for switching to target now (pure: reads the device, changes nothing).
        force: skip the temperature and power gate (never the memory check). reading: the
        device as already read (a display planning every catalog row against one sample)."""
        entry = self.catalog.get(target)
        loaded = self._loaded
        return plan_switch(
            entry, active_model=loaded.entry.id if loaded else None,
            active_loaded_bytes=loaded.measured_bytes if loaded else 0,
            reading=reading if reading is not None else self._probe.read(),
            limits=self.limits, estimate=self._fit,
            on_disk=not entry.is_remote and self._on_disk(entry), private=private,
            remote_configured=self.remote_configured(entry),
            predicted_s=self._history.predicted_duration(self.active_model, target),
            force=force, crash_loop=self.crashing_models().get(target))

    # -- concurrency gate (thermal policy) ------------------------------------------------------
    @property
    def max_concurrent(self) -> int | None:
        """How many generations the engine gets at once (None: no limit). Public: every caller
        that sends work to the engine (chat session, local API scheduler) must respect it by
        holding `generation_slot()` while a generation runs."""
        return self._gate.limit

    async def set_max_concurrent(self, limit: int | None) -> None:
        """Give the engine at most `limit` requests at once (None: no limit). Generations already
        running finish; new ones wait in `generation_slot()` until fewer than `limit` run."""
        if limit is not None and limit < 1:
            raise ValueError(f"max_concurrent must be at least 1 or None, got {limit}")
        await self._gate.set_limit(limit)

    def generation_slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while a generation runs on the active engine (respects the concurrency limit)."""
        return self._gate.slot()

    # -- switching ------------------------------------------------------------------------------
    async def switch_to(self, target: str, reason: str = "manual", private: bool = False,
                        force: bool = False) -> SwitchResult:
        """Make `target` the active model (or, failing that, the best fallback).

        Serialised with every other switch; a request for a target already in flight joins it.
        Cancelling the caller that started a switch cancels it and leaves nothing half-loaded.
        force: skip the temperature and power gate (an alert's
        step-down, a confirmed "Switch anyway"); the memory check always runs. The history row
        says `forced`.
        """
        if self._closed:
            raise RuntimeError("the model manager is closed")
        self.catalog.get(target)  # unknown names fail here, with the known ids
        await self.check_engine()  # a dead engine is not "active": the request reloads it
        task = self._inflight.get(target)
        if task is not None and not task.done() and task is self._last_task:
            # Joins only the newest request: after a switch elsewhere is queued, the target must
            # be switched to again once that one ends.
            return await asyncio.shield(task)
        if self.active_model == target and not self._lock.locked():
            return SwitchResult(target, target, "noop", reason, None, 0.0)
        task = asyncio.ensure_future(self._run(target, reason, private, force))
        self._inflight[target] = task
        self._last_task = task
        task.add_done_callback(lambda t: self._inflight.pop(target, None)
                               if self._inflight.get(target) is t else None)
        return await task

    async def cancel_switches(self) -> None:
        """Cancel every switch in flight or queued (the GUI's Cancel button)."""
        tasks = [t for t in self._inflight.values() if not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def unload(self) -> None:
        """Unload the active model (if any), behind the switch lock."""
        async with self._lock:
            await self._unload_current()

    async def emergency_unload(self, why: str) -> float | None:
        """Unload now because an alert left nothing smaller to go to (an emergency
        unload): a history row (outcome `unloaded`) and an event say why. Returns the seconds
        the unload took (None: nothing was loaded)."""
        async with self._lock:
            loaded = self._loaded
            if loaded is None:
                return None
            started = self._clock()
            t0 = time.monotonic()
            await self._unload_current()
            took = time.monotonic() - t0
            model = loaded.entry.id
            message = f"{why}: unloaded {model} in {took:.1f} s"
            self._history.record_switch(from_model=model, to_model=NO_MODEL, reason="alert",
                                        outcome="unloaded", total_s=self._clock() - started,
                                        phases={"unloading": took}, error=message, forced=True)
            logger.warning("%s", message)
            self.emit(SwitchEvent(0, StateChange.UNLOADED, model, model, "alert", took,
                                  message=message))
            return took

    async def check_engine(self) -> bool:
        """Whether the active engine (if any) is alive; a dead one is handled as a crash now."""
        loaded = self._loaded
        if loaded is None or loaded.engine.is_healthy():
            return True
        await self._on_engine_death(loaded)
        return False

    async def close(self) -> None:
        """Cancel switches and shut the engine down (app exit). Idempotent."""
        self._closed = True
        await self.cancel_switches()
        await self.unload()
        self._stop_watching()
        loop = asyncio.get_running_loop()
        mine = [t for t in self._stopped_watchers if t.get_loop() is loop]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)

    async def _run(self, target: str, reason: str, private: bool,
                   force: bool) -> SwitchResult:
        async with self._lock:
            start = self._clock()
            if self.active_model == target:
                return SwitchResult(target, target, "noop", reason, None, 0.0)
            entry = self.catalog.get(target)
            self._switching_to = target
            try:
                return await self._switch_within_deadline(entry, reason, private, force, start)
            finally:
                self._switching_to = None
                self._phase = None
                active = self.active_model
                self.emit(SwitchEvent(0, StateChange.SETTLED, active or target, active, reason,
                                      self._clock() - start))

    async def _switch_within_deadline(self, entry: ModelEntry, reason: str, private: bool,
                                      force: bool, start: float) -> SwitchResult:
        """The whole switch (every cascade step and retry) within switch_timeout_seconds; at
        expiry the attempt in flight is cancelled (its row: timed_out, with what was tried and
        for how long) and the previous model is brought back."""
        previous = self.active_model
        limit_s = self.switching.switch_timeout_seconds
        tried: list[str] = []
        work = asyncio.ensure_future(
            self._switch_with_fallback(entry, reason, private, force, start, tried))
        self._deadline_expired = False
        try:
            done, _ = await asyncio.wait({work}, timeout=limit_s)
        except asyncio.CancelledError:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            raise
        if done:
            return work.result()
        self._deadline_expired = True
        self._deadline_note = (f"the switch deadline of {limit_s:.0f} s ran out; tried "
                               + (", ".join(tried) or entry.id))
        work.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await work
        finally:
            self._deadline_expired = False
        errors = [self._deadline_note]
        ids: list[int] = []
        if previous is not None and self.active_model is None:
            # Bringing the previous model back gets a deadline of its own.
            restore_s = self.switching.switch_timeout_seconds
            try:
                row_id, error = await asyncio.wait_for(
                    self._switch_once(self.catalog.get(previous), "fallback", private),
                    restore_s)
            except TimeoutError:
                row_id, error = None, f"not restored within {restore_s:.0f} s"
            if row_id is not None:
                ids.append(row_id)
            errors.append(f"{previous} restored" if error is None else f"{previous}: {error}")
        message = "; ".join(errors)
        self._emit_simple(SwitchPhase.FAILED, entry.id, reason, message, error=message)
        return SwitchResult(entry.id, self.active_model, "failed", reason, None,
                            self._clock() - start, tuple(errors), tuple(ids), force)

    async def _switch_with_fallback(self, entry: ModelEntry, reason: str, private: bool,
                                    force: bool, start: float,
                                    tried: list[str]) -> SwitchResult:
        previous = self.active_model
        first_plan = self.plan_switch(entry.id, private, force)
        candidates = [entry.id]
        candidates += [m for m in self.next_models(entry.id, private=private)
                       if m not in candidates]
        # A forced switch stays forced down its cascade only for models no larger than the
        # target: the gate is skipped to get smaller, never to load something bigger while hot.
        target_size = self.model_bytes(entry.id)
        errors: list[str] = []
        ids: list[int] = []
        for i, model_id in enumerate(candidates):
            cand = self.catalog.get(model_id)
            if i > 0 and self.active_model == model_id:
                # The previous model is still loaded (refused before unloading): keep it.
                return SwitchResult(entry.id, model_id, "fallback", reason, first_plan,
                                    self._clock() - start, tuple(errors), tuple(ids), force)
            if i > 0:  # the candidate before failed: errors[-1] says why
                self._emit_simple(SwitchPhase.FALLBACK, cand.id, reason,
                                  f"{errors[-1]} - falling back to {cand.id}")
            size = self.model_bytes(model_id)
            forced = force and (i == 0 or (target_size is not None and size is not None
                                           and size <= target_size))
            tried.append(model_id)
            row_id, error = await self._switch_once(cand, reason if i == 0 else "fallback",
                                                    private, forced)
            if row_id is not None:
                ids.append(row_id)
            if error is None:
                outcome = "ready" if i == 0 else "fallback"
                return SwitchResult(entry.id, cand.id, outcome, reason, first_plan,
                                    self._clock() - start, tuple(errors), tuple(ids), force)
            errors.append(f"{cand.id}: {error}")
        # Nothing down the cascade loaded: bring back what was loaded before, if it was unloaded.
        if previous is not None and self.active_model is None and previous not in candidates:
            tried.append(previous)
            row_id, error = await self._switch_once(self.catalog.get(previous), "fallback",
                                                    private)
            if row_id is not None:
                ids.append(row_id)
            if error is not None:
                errors.append(f"{previous}: {error}")
        self._emit_simple(SwitchPhase.FAILED, entry.id, reason, "; ".join(errors),
                          error="; ".join(errors))
        return SwitchResult(entry.id, self.active_model, "failed", reason, first_plan,
                            self._clock() - start, tuple(errors), tuple(ids), force)

    def is_usable(self, entry: ModelEntry, private: bool = False) -> bool:
        """Could this model be loaded here at all (enabled, on disk, or remote allowed)?"""
        if not entry.enabled:
            return False
        if entry.is_remote:
            return not private and self.remote_configured(entry)
        return self._on_disk(entry)

    async def _switch_once(self, entry: ModelEntry, reason: str, private: bool,
                           force: bool = False) -> tuple[int | None, str | None]:
        """One switch to one model, recorded as one history row. Returns (row id, error)."""
        from_model = self.active_model
        a = _Attempt(next(self._ids), entry, reason, from_model, self._clock(),
                     SwitchEta(self._history.predicted_phases(
                         from_model, entry.id, engine_start=self._expected_start(entry))),
                     forced=force)
        t0 = time.monotonic()
        try:
            await self._execute(a, private)
        except SwitchFailed as exc:
            row = self._record(a, exc.outcome, str(exc))
            self._emit(a, SwitchPhase.FAILED, str(exc), error=str(exc))
            return row, str(exc)
        except asyncio.CancelledError:
            if self._deadline_expired:
                phase = a.phase.replace("_", " ")
                note = (f"{self._deadline_note}; {entry.id} was {phase} (attempt "
                        f"{max(1, a.attempts)}) for {time.monotonic() - t0:.1f} s")
                self._deadline_note = note
                self._record(a, "timed_out", note)
                self._emit(a, SwitchPhase.FAILED, note, error=note)
            else:
                self._record(a, "cancelled", "cancelled")
                self._emit(a, SwitchPhase.CANCELLED, "switch cancelled")
            raise
        self._active_private = private
        row = self._record(a, "ready", None)
        self._emit(a, SwitchPhase.READY, f"{entry.id} ready")
        return row, None

    async def _execute(self, a: _Attempt, private: bool) -> None:
        entry = a.entry
        with self._phase_timer(a, SwitchPhase.PLANNING, f"planning the switch to {entry.id}"):
            plan = self.plan_switch(entry.id, private, a.forced)
        if plan.noop:
            return
        if not plan.ok:
            # Refused before anything was unloaded: the active model stays.
            raise SwitchFailed("refused", f"refused: {plan.refusal}")

        self._start_prefetch(entry)
        if self._loaded is not None:
            released = self._loaded.measured_bytes
            free_before = self._probe.read().free_bytes
            # Free memory that already covers the next model (and the buffer) is enough.
            sufficient = (plan.fit.needed_bytes + self.limits.buffer_bytes
                          if plan.fit is not None and plan.fit.needed_bytes else None)
            with self._phase_timer(a, SwitchPhase.UNLOADING, f"unloading {self._loaded.entry.id}"):
                await self._unload_current()
            with self._phase_timer(a, SwitchPhase.WAITING_FOR_MEMORY,
                                   "waiting for the device memory to come back"):
                await self._wait_memory(free_before, released, sufficient)

        with self._phase_timer(a, SwitchPhase.CHECKING, "checking free memory, temperature, power"):
            plan = self.plan_switch(entry.id, private, a.forced)
        if not plan.ok:
            raise SwitchFailed("refused", f"refused after unloading: {plan.refusal}")
        fit = plan.fit
        spec = self._load_spec(entry, fit.context if fit else (entry.default_context or 2048),
                               fit.memory_utilization if fit else 0.1,
                               fit.kv_cache_tokens if fit else None)
        loaded_bytes = fit.needed_bytes if fit else 0  # a remote endpoint holds nothing here

        free_before_load = self._probe.read().free_bytes
        with self._phase_timer(a, SwitchPhase.LOADING, f"loading {entry.id}"):
            engine, spec = await self._load_with_retries(a, spec, loaded_bytes)
        self._loaded = _Loaded(entry, engine, spec, loaded_bytes, loaded_bytes)
        with self._phase_timer(a, SwitchPhase.WARMING_UP, "warming up with one short request"):
            try:
                # No timeout of its own: the switch's deadline bounds it.
                await self._warm_up(engine, spec)
            except (EngineError, TimeoutError) as exc:
                await self._unload_current()
                raise SwitchFailed("failed", f"warm-up failed: {_describe(exc)}") from exc
            except asyncio.CancelledError:
                await asyncio.shield(self._unload_current())
                raise
        free_after_load = self._probe.read().free_bytes
        if free_before_load is not None and free_after_load is not None:
            # Wait later for what the device really gave up, not for the estimate: on the host
            # (vLLM's CPU build) the reserved share is not all resident. Never more than the
            # estimate (a remote endpoint's: nothing): what another program took meanwhile is
            # not the engine's to give back, and would never come back at the next unload.
            measured = max(0, free_before_load - free_after_load)
            self._loaded.measured_bytes = min(measured, loaded_bytes)
        self._watch(self._loaded)

    def _start_prefetch(self, entry: ModelEntry) -> None:
        """Start reading the target's files ahead, in a thread, without waiting for it."""
        if self._prefetch is None or entry.is_remote:
            return
        try:
            path = self.catalog.local_path(entry)
        except (OSError, ValueError):
            return
        reading = asyncio.get_running_loop().run_in_executor(None, self._prefetch, path)
        reading.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _load_with_retries(self, a: _Attempt, spec: LoadSpec,
                                 loaded_bytes: int) -> tuple[Engine, LoadSpec]:
        attempts = max(1, self.switching.max_retries)
        last = ""
        context_retried = False
        n = 0
        while n < attempts:
            n += 1
            a.attempts += 1
            if a.attempts > 1:
                # A retry is a fresh load: its ETA is a whole load's again.
                a.phase_started, a.load_phase = self._clock(), None
                self._emit(a, SwitchPhase.LOADING, f"loading {spec.model_id} "
                           f"(attempt {a.attempts}: {last})")
            engine = self._factory(a.entry)
            if hasattr(engine, "on_load_phase"):  # engines that report their load's phases
                engine.on_load_phase = lambda phase: self._on_load_phase(a, phase)
            self._activity.set_loading(True, spec.model_id)
            # Report the memory while loading: the engine takes it during the load, not after.
            self._activity.set_loaded(spec.model_id, loaded_bytes)
            try:
                # No timeout per attempt: the switch's one deadline bounds every attempt.
                await engine.load(spec)
                self._activity.set_loading(False)
                a.load_phases = dict(getattr(engine, "load_phases", None) or {})
                a.engine_start = getattr(engine, "engine_start", None)
                return engine, spec
            except asyncio.CancelledError:
                await asyncio.shield(self._discard(engine))
                raise
            except ContextTooLongError as exc:
                await self._discard(engine)
                last = _describe(exc)
                if exc.max_fitting and not context_retried and exc.max_fitting < spec.max_model_len:
                    spec = dataclasses.replace(spec, max_model_len=exc.max_fitting)
                    context_retried = True
                    n -= 1  # a fitted retry is not a failure of the model
                    continue
                raise SwitchFailed("failed", last) from exc
            except TRANSIENT_ERRORS as exc:
                await self._discard(engine)
                last = _describe(exc)
            except EngineError as exc:
                await self._discard(engine)
                raise SwitchFailed("failed", _describe(exc)) from exc
        raise SwitchFailed("failed", f"{last} (gave up after {a.attempts} attempts)")

    async def _discard(self, engine: Engine) -> None:
        """Shut down an engine that never became active (nothing half-loaded stays)."""
        try:
            await engine.shutdown()
        finally:
            self._activity.set_loading(False)
            self._activity.set_loaded(None, 0)

    async def _unload_current(self) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        self._stop_watching()
        try:
            await loaded.engine.shutdown()
        finally:
            self._activity.set_loaded(None, 0)

    # -- crash recovery -------------------------------------------------------------------------
    def _watch(self, loaded: _Loaded) -> None:
        self._stop_watching()
        self._watcher = asyncio.ensure_future(self._watch_engine(loaded))

    def _stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not asyncio.current_task() and not watcher.done():
            watcher.cancel()
            # Kept until it has ended, so close() can wait for it (no task left pending).
            self._stopped_watchers.add(watcher)
            watcher.add_done_callback(self._stopped_watchers.discard)

    async def _watch_engine(self, loaded: _Loaded) -> None:
        # Real time, not the injected clock: this polls processes, it does not measure a switch.
        while self._loaded is loaded:
            await asyncio.sleep(self._watch_interval_s)
            if self._loaded is loaded and not loaded.engine.is_healthy():
                await self._on_engine_death(loaded)
                return

    async def _on_engine_death(self, loaded: _Loaded) -> None:
        """The active engine died on its own: no model is active, a `crashed` row and an event
        say how it ended, and the crash-loop guard counts it."""
        if self._loaded is not loaded:
            return  # already handled, or replaced by a switch
        self._loaded = None
        if self._watcher is asyncio.current_task():
            self._watcher = None  # the next load must not cancel the clean-up below
        model = loaded.entry.id
        died = getattr(loaded.engine, "died", None)
        detail = str(died) if died else "the engine stopped responding"
        now = self._clock()
        deaths = self._deaths.setdefault(model, deque(maxlen=CRASH_LOOP_DEATHS * 2))
        deaths.append(now)
        guard = self.crashing_models().get(model)
        message = f"{model} crashed: {detail}" + (
            f" Crash-loop guard: {guard}; requests fall back down the cascade." if guard
            else " The next request loads it again.")
        logger.error("%s", message)
        self._history.record_switch(from_model=model, to_model=NO_MODEL, reason="crash",
                                    outcome="crashed", total_s=0.0, phases={}, error=detail)
        self.emit(SwitchEvent(0, StateChange.CRASHED, model, model, "crash", 0.0,
                              message=message, error=detail))
        try:
            await loaded.engine.shutdown()  # reap what is left of it
        except EngineError as exc:
            logger.warning("cleaning up after the crash of %s: %s", model, exc)
        finally:
            if self._loaded is None:
                self._activity.set_loaded(None, 0)

    async def _wait_memory(self, free_before: int | None, released: int,
                           sufficient: int | None = None) -> None:
        # free_before was read with the model loaded: the memory it held must come back on top.
        try:
            await wait_for_memory(
                self._probe, free_before_unload=free_before, released_bytes=released,
                poll_interval_s=self.switching.memory_poll_interval_seconds,
                timeout_s=self.switching.memory_return_timeout_seconds, clock=self._clock,
                sleep=self._sleep, sufficient_free_bytes=sufficient)
        except MemoryNotReturnedError as exc:
            raise SwitchFailed("failed", str(exc)) from exc

    async def _warm_up(self, engine: Engine, spec: LoadSpec) -> None:
        request = GenerationRequest((ChatMessage("user", "Hi"),), max_tokens=WARMUP_MAX_TOKENS,
                                    temperature=0.0, request_id=f"warmup-{spec.model_id}")
        async for delta in engine.generate(request):
            if delta.finished:
                break

    def _load_spec(self, entry: ModelEntry, context: int, utilization: float,
                   kv_cache_tokens: int | None = None) -> LoadSpec:
        path = entry.base_url or "" if entry.is_remote else str(self.catalog.local_path(entry))
        return LoadSpec(model_id=entry.id, path=path, max_model_len=context,
                        memory_utilization=utilization, quantization=entry.vllm_quantization,
                        dtype=entry.vllm_dtype, trust_remote_code=entry.trust_remote_code,
                        enforce_eager=entry.enforce_eager, kv_cache_tokens=kv_cache_tokens)

    # -- events and history ---------------------------------------------------------------------
    def _on_load_phase(self, a: _Attempt, phase: str) -> None:
        """The engine's load entered a phase: say so with a fresh ETA (the Models tab)."""
        if self._phase != SwitchPhase.LOADING:
            return
        a.load_phase = phase
        self._emit(a, SwitchPhase.LOADING,
                   f"loading {a.entry.id}: {LOAD_LABELS.get(phase, phase)}")

    @contextlib.contextmanager
    def _phase_timer(self, a: _Attempt, phase: SwitchPhase, message: str) -> Iterator[None]:
        self._phase = phase
        a.phase, a.phase_started, a.load_phase = phase.value, self._clock(), None
        self._emit(a, phase, message)
        t0 = self._clock()
        try:
            yield
        finally:
            a.phases[phase.value] = self._clock() - t0

    def _emit(self, a: _Attempt, phase: SwitchPhase, message: str,
              error: str | None = None) -> None:
        now = self._clock()
        elapsed = now - a.started
        # Emitted as a load phase starts (or with none): nothing of it has run yet.
        eta = a.eta.remaining(a.phase, now - a.phase_started, a.load_phase)
        if phase in (SwitchPhase.READY, SwitchPhase.FAILED, SwitchPhase.CANCELLED):
            eta = 0.0
        self.emit(SwitchEvent(a.switch_id, phase, a.entry.id, a.from_model, a.reason, elapsed,
                              eta, a.predicted_s, max(1, a.attempts), message, error))

    def _emit_simple(self, phase: SwitchPhase, target: str, reason: str, message: str,
                     error: str | None = None) -> None:
        self.emit(SwitchEvent(0, phase, target, self.active_model, reason, 0.0, None, None, 1,
                              message, error))

    def _record(self, a: _Attempt, outcome: str, error: str | None) -> int | None:
        return self._history.record_switch(
            from_model=a.from_model, to_model=a.entry.id, reason=a.reason, outcome=outcome,
            total_s=self._clock() - a.started, phases=a.phases, error=error,
            attempts=max(1, a.attempts), forced=a.forced, load_phases=a.load_phases,
            engine_start=a.engine_start)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__

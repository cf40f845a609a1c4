"""Fair request scheduling in front of the one active model.

Requests for the model whose batch is running join it at once (the manager's concurrency gate,
set by the thermal policy, then limits how many generate together). A request for another model
waits; waiting requests are grouped by model, and once the running batch has ended the oldest
group is switched to and admitted whole. So clients alternating between two models cost one
switch per batch, not one per request, and a request's model cannot be unloaded by a queued switch
before it has generated (both happened on main when every request called `switch_to` itself).
While another group waits, new requests for the running model queue behind it (no starvation).
The queue is bounded: a full queue raises `QueueFullError` (the API answers 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from core.engine.base import EngineError, GenerationDelta
from core.manager.manager import ModelManager, SwitchResult

DEFAULT_MAX_QUEUE = 32
RATE_WINDOW_S = 60.0
DEFAULT_RETRY_AFTER_S = 10.0


class NoModelError(EngineError):
    """Nothing could be made active for this request."""


class QueueFullError(EngineError):
    """The scheduler's queue is full; retry after `retry_after_s`."""

    def __init__(self, queued: int, limit: int, retry_after_s: float) -> None:
        self.queued = queued
        self.limit = limit
        self.retry_after_s = retry_after_s
        super().__init__(f"The request queue is full ({queued} of {limit} waiting); "
                         f"retry in {retry_after_s:.0f} s.")


@dataclass(frozen=True)
class RequestRecord:
    """How one scheduled request ended (for metrics and history displays)."""

    model: str  # the model it asked for (after routing)
    active: str | None  # the model it ran on (a fallback may differ)
    outcome: str  # "ok", "cancelled", "error", "rejected", "no_model"
    queued_s: float
    tokens: int = 0
    first_token_s: float | None = None
    tokens_per_s: float | None = None


@dataclass(frozen=True)
class SchedulerStats:
    queued: int  # waiting for a switch or for a slot under the concurrency limit
    running: int  # generating now
    switches: int  # switches the scheduler asked for that changed the model
    requests_per_s: float  # admissions over the last minute
    outcomes: dict[tuple[str, str], int]  # (model, outcome) -> count


@dataclass
class Admission:
    """Held by a request while it may generate: the switch that made its model active, and the
    last delta it saw (the caller sets it; it becomes the request's record)."""

    model: str
    result: SwitchResult
    last: GenerationDelta | None = None

    @property
    def active(self) -> str | None:
        return self.result.active


@dataclass
class _Waiter:
    reason: str
    future: asyncio.Future[SwitchResult] = field(repr=False)


Key = tuple[str, bool]  # (model id, private): a private request never joins a remote fallback
Listener = Callable[[RequestRecord], None]


class RequestScheduler:
    """Admits generation requests to the active model fairly. Use from one event loop."""

    def __init__(self, manager: ModelManager, *, max_queue: int = DEFAULT_MAX_QUEUE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.manager = manager
        self.max_queue = max_queue
        self._clock = clock
        self._groups: OrderedDict[Key, deque[_Waiter]] = OrderedDict()
        self._batch: Key | None = None
        self._batch_result: SwitchResult | None = None
        self._admitted = 0  # in the running batch, generating or waiting for a gate slot
        self._slot_waiting = 0
        self._switch_task: asyncio.Task[None] | None = None
        self._switch_key: Key | None = None  # the group _switch_task switches for
        self._switches = 0
        self._last_switch_s: float | None = None
        self._admissions: deque[float] = deque()
        self._outcomes: Counter[tuple[str, str]] = Counter()
        self._listeners: list[Listener] = []

    # -- observation ----------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return sum(len(g) for g in self._groups.values()) + self._slot_waiting

    def stats(self) -> SchedulerStats:
        now = self._clock()
        while self._admissions and now - self._admissions[0] > RATE_WINDOW_S:
            self._admissions.popleft()
        return SchedulerStats(self.queued, self._admitted - self._slot_waiting, self._switches,
                              len(self._admissions) / RATE_WINDOW_S, dict(self._outcomes))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call back with a RequestRecord as each request ends; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def retry_after_s(self) -> float:
        """A client told the queue is full should wait about one switch."""
        return max(1.0, self._last_switch_s or DEFAULT_RETRY_AFTER_S)

    # -- admission ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def admit(self, model: str, reason: str = "manual",
                    private: bool = False) -> AsyncIterator[Admission]:
        """Wait until `model` is active and this request may generate on it; hold while it does.

        Raises KeyError/ValueError for an unknown model (from the catalog), QueueFullError,
        NoModelError when the switch failed. Cancelling the caller leaves the queue clean.
        """
        self.manager.catalog.get(model)
        key = (model, private)
        started = self._clock()
        if self._can_join(key):
            self._admitted += 1
            result = self._batch_result
            assert result is not None
        else:
            result = await self._wait_for_batch(key, reason, started)
        self._admissions.append(self._clock())
        admission = Admission(model, result)
        outcome = "cancelled"
        queued_s = 0.0
        in_slot = False
        self._slot_waiting += 1
        try:
            async with self.manager.generation_slot():
                self._slot_waiting -= 1
                in_slot = True
                queued_s = self._clock() - started
                try:
                    yield admission
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except BaseException:
                    outcome = "error"
                    raise
                outcome = "ok"
        finally:
            if not in_slot:
                self._slot_waiting -= 1  # cancelled while waiting for a slot
            self._admitted -= 1
            last = admission.last
            self._record(RequestRecord(
                model, admission.active, outcome, queued_s, last.tokens if last else 0,
                last.first_token_s if last else None, last.tokens_per_s if last else None))
            self._pump()

    def _can_join(self, key: Key) -> bool:
        # Only an already running batch of the same key, with no one else waiting and the
        # manager not busy elsewhere, is joined without queueing.
        return (self._batch == key and self._admitted > 0 and self._switch_task is None
                and not self._groups and self._batch_result is not None
                and self.manager.state.switching_to is None)

    async def _wait_for_batch(self, key: Key, reason: str, started: float) -> SwitchResult:
        if self.queued >= self.max_queue:
            self._record(RequestRecord(key[0], None, "rejected", 0.0))
            raise QueueFullError(self.queued, self.max_queue, self.retry_after_s())
        waiter = _Waiter(reason, asyncio.get_running_loop().create_future())
        self._groups.setdefault(key, deque()).append(waiter)
        self._pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._admitted -= 1  # admitted in the same turn as the cancel
            else:
                group = self._groups.get(key)
                if group is not None and waiter in group:
                    group.remove(waiter)
                    if not group:
                        del self._groups[key]
                        self._drop_orphan_switch(key)
            self._record(RequestRecord(key[0], None, "cancelled", self._clock() - started))
            self._pump()
            raise
        except NoModelError:
            self._record(RequestRecord(key[0], None, "no_model", self._clock() - started))
            raise

    def _drop_orphan_switch(self, key: Key) -> None:
        """The last waiter for `key` left: a switch for it that still waits for the manager (held
        by a switch begun elsewhere) would load a model for nobody. Cancelled while it waits, it
        has changed nothing; once it is running, it is left to finish (cancelling then would
        leave no model at all)."""
        task = self._switch_task
        if (task is None or task.done() or self._switch_key != key
                or self.manager.state.switching_to == key[0]):
            return
        task.cancel()
        task.add_done_callback(lambda _: self._pump())  # the next group's turn

    # -- dispatch -------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Start the next group's switch when the running batch has ended."""
        if self._switch_task is not None or self._admitted > 0 or not self._groups:
            return
        key = next(iter(self._groups))
        reason = self._groups[key][0].reason
        self._switch_key = key
        self._switch_task = asyncio.ensure_future(self._switch_for(key, reason))
        self._switch_task.set_name(f"scheduler-switch-{key[0]}")

    async def _switch_for(self, key: Key, reason: str) -> None:
        model, private = key
        before = self.manager.active_model
        t0 = self._clock()
        error: str | None = None
        result: SwitchResult | None = None
        try:
            result = await self.manager.switch_to(model, reason=reason, private=private)
        except asyncio.CancelledError:
            self._switch_task = None
            self._fail(key, NoModelError(f"Could not make {model} active: the switch was "
                                         "cancelled."))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiter of the group
            error = str(exc) or type(exc).__name__
        self._switch_task = None
        if result is not None and result.ok and self.manager.active_engine is not None:
            if result.active != before:
                self._switches += 1
                self._last_switch_s = self._clock() - t0
            self._batch, self._batch_result = key, result
            for waiter in self._groups.pop(key, deque()):
                if not waiter.future.done():
                    self._admitted += 1
                    waiter.future.set_result(result)
        else:
            if result is not None:
                error = "; ".join(result.errors) or f"the switch ended {result.outcome}"
            self._fail(key, NoModelError(f"Could not make {model} active: {error}"))
        self._pump()

    def _fail(self, key: Key, error: NoModelError) -> None:
        for waiter in self._groups.pop(key, deque()):
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def _record(self, record: RequestRecord) -> None:
        self._outcomes[(record.model, record.outcome)] += 1
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                listener(record)

    async def close(self) -> None:
        """Cancel a switch the scheduler started; waiters get NoModelError."""
        task = self._switch_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

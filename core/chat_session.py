"""A chat session for the GUI and the CLI: route (or take the named model), make it active through
the manager (switching if needed), stream from the active engine, record tokens/s in history."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from core.engine.base import EngineError, GenerationDelta, GenerationRequest
from core.history_store import HistoryStore
from core.manager.manager import ModelManager
from core.manager.memory_wait import MemoryProbe
from core.models.estimator import fmt_bytes
from core.router.selection import HardwareState, Router, RoutingDecision


class NoModelError(EngineError):
    """Nothing could be made active for this request."""


class ChatSession:
    """Streams replies on the model the router (or the user) picks; one model active at a time."""

    def __init__(self, manager: ModelManager, router: Router, history: HistoryStore,
                 probe: MemoryProbe, *, device_label: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.router = router
        self.history = history
        self._probe = probe
        self._label = device_label
        self._clock = clock
        self._running: dict[str, str] = {}  # request id -> model id
        self.last_decision: RoutingDecision | None = None

    def model_choices(self) -> list[str]:
        """Models a user may pick by name: enabled and loadable here."""
        return [e.id for e in self.manager.catalog if self.manager.is_usable(e)]

    def hardware_state(self) -> HardwareState:
        """The device as the router should see it: the active model's memory counts as free,
        since switching would release it."""
        r = self._probe.read()
        free = (r.free_bytes or 0) + self.manager.state.loaded_bytes
        return HardwareState(free, r.total_bytes or 0, r.temperature_c, self._label)

    def route_only(self, text: str, task_type: str, private: bool = False, *,
                   free_bytes: int | None = None,
                   temperature_c: float | None = None) -> RoutingDecision:
        """The router's decision for text without loading anything; free_bytes and
        temperature_c, when given, replace the measured values (a what-if, marked assumed)."""
        measured = self.hardware_state()
        if free_bytes is not None and free_bytes > measured.total_bytes:
            raise ValueError(f"cannot assume {fmt_bytes(free_bytes)} free: the device has "
                             f"{fmt_bytes(measured.total_bytes)} in all")
        hardware = measured.assume(free_bytes, temperature_c)
        return self.router.route(text, task_type, hardware, private)

    async def generate(self, request: GenerationRequest, model: str | None = None,
                       task_type: str = "unknown",
                       private: bool = False) -> AsyncIterator[GenerationDelta]:
        """Stream the reply. model None or "auto": the router picks; `last_decision` says why."""
        if model in (None, "auto"):
            text = "\n".join(m.content for m in request.messages)
            decision = self.router.route(text, task_type, self.hardware_state(), private)
            self.last_decision = decision
            if decision.model_id is None:
                raise NoModelError("The router found no usable model:\n" + decision.explain())
            target = decision.model_id
            reason = "router"
        else:
            target, reason = str(model), "manual"
        result = await self.manager.switch_to(target, reason=reason, private=private)
        engine = self.manager.active_engine
        active = self.manager.active_model
        if not result.ok or engine is None or active is None:
            raise NoModelError(f"Could not make {target} active: " + "; ".join(result.errors))
        self._running[request.request_id] = active
        last: GenerationDelta | None = None
        try:
            async with self.manager.generation_slot():
                async for delta in engine.generate(request):
                    last = delta
                    yield delta
        finally:
            self._running.pop(request.request_id, None)
            if last is not None and last.tokens > 0:
                self.history.record_generation(active, last.tokens, last.elapsed_s,
                                               last.first_token_s, last.tokens_per_s)

    async def abort(self, request_id: str) -> None:
        """Stop a running request (no-op when it already ended)."""
        engine = self.manager.active_engine
        if request_id in self._running and engine is not None:
            await engine.abort(request_id)

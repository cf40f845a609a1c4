"""A chat session for the GUI, the CLI and the local API: route (or take the named model), wait
for the scheduler to make it active (switching if needed), stream from the active engine, record
tokens/s in history. Every generation of the app goes through here, so through the scheduler."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.engine.base import GenerationDelta, GenerationRequest
from core.history_store import HistoryStore
from core.manager.manager import ModelManager
from core.manager.memory_wait import MemoryProbe
from core.models.estimator import fmt_bytes
from core.router.selection import HardwareState, Router, RoutingDecision
from core.routing_log import RoutedRequest, RoutingLog
from core.scheduler import Admission, NoModelError, RequestScheduler

if TYPE_CHECKING:
    from core.side_by_side import ModelRun

__all__ = ["ChatSession", "NoModelError", "Target"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """The model a request will ask the scheduler for, and why (the router's decision for auto)."""

    model: str
    reason: str  # "router" or "manual"
    decision: RoutingDecision | None = None


class ChatSession:
    """Streams replies on the model the router (or the user) picks; one model active at a time."""

    def __init__(self, manager: ModelManager, router: Router, history: HistoryStore,
                 probe: MemoryProbe, *, device_label: str = "",
                 scheduler: RequestScheduler | None = None,
                 routing_log: RoutingLog | None = None,
                 track_tokens_per_s: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.router = router
        self.history = history
        self.scheduler = scheduler or RequestScheduler(manager)
        # Every request the router decides is logged here (None or disabled: not logged).
        self.routing_log = routing_log
        self._track_tokens_per_s = track_tokens_per_s
        self._probe = probe
        self._label = device_label
        self._clock = clock
        self._running: dict[str, str] = {}  # request id -> model id
        self.last_decision: RoutingDecision | None = None

    def model_choices(self) -> list[str]:
        """Models a user may pick by name: enabled and loadable here."""
        return [e.id for e in self.manager.catalog if self.manager.is_usable(e)]

    def task_types(self) -> list[str]:
        """The task types the router scores (its config), then "unknown" for any other."""
        return [*self.router.config.complexity.task_types, "unknown"]

    def active_model(self) -> str | None:
        return self.manager.active_model

    def model_context(self, model_id: str) -> int | None:
        """The context the model has (loaded) or would get on this device (the estimator's fit,
        else the catalog's default); None for a remote model."""
        entry = self.manager.catalog.get(model_id)
        state = self.manager.state
        if state.active_model == model_id and state.max_model_len:
            return state.max_model_len
        if entry.is_remote:
            return None
        try:
            fit = self.manager.plan_switch(model_id).fit
        except Exception:  # noqa: BLE001 - an estimate that cannot be made: the catalog's value
            fit = None
        return fit.context if fit is not None else entry.default_context

    def tokenizer_dir(self, model_id: str) -> Path | None:
        """The model's local directory when it is on disk (its tokenizer counts prompts)."""
        entry = self.manager.catalog.get(model_id)
        if entry.is_remote or not self.manager.catalog.is_on_disk(entry):
            return None
        return self.manager.catalog.local_path(entry)

    def thinking_mode(self, model_id: str) -> str:
        """The catalog's mode: "thinking" (always thinks), "base" (Qwen3 hybrid: a toggle),
        "instruct" (never thinks)."""
        return self.manager.catalog.get(model_id).mode

    def default_thinking(self, model_id: str) -> bool:
        """Whether a request that leaves thinking open (None) thinks on this model: the
        catalog's mode decides (hybrids think by default, as Qwen3's template does)."""
        return self.thinking_mode(model_id) != "instruct"

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

    def resolve(self, request: GenerationRequest, model: str | None = None,
                task_type: str = "unknown", private: bool = False) -> Target:
        """The model to ask for. None or "auto": the router picks (NoModelError when nothing is
        usable, with its explanation); a name is checked against the catalog (KeyError)."""
        if model not in (None, "auto"):
            self.manager.catalog.get(str(model))
            return Target(str(model), "manual")
        text = "\n".join(m.content for m in request.messages)
        decision = self.router.route(text, task_type, self.hardware_state(), private)
        self.last_decision = decision  # the playground and the CLI show it, also a refusal
        if decision.model_id is None:
            self._log_routed(request.request_id, decision, None, "no_model", None)
            raise NoModelError("The router found no usable model:\n" + decision.explain())
        return Target(decision.model_id, "router", decision)

    async def generate(self, request: GenerationRequest, model: str | None = None,
                       task_type: str = "unknown",
                       private: bool = False) -> AsyncIterator[GenerationDelta]:
        """Stream the reply. model None or "auto": the router picks; `last_decision` says why."""
        target = self.resolve(request, model, task_type, private)
        async for delta in self.stream(request, target, private):
            yield delta

    async def stream(self, request: GenerationRequest, target: Target, private: bool = False,
                     on_admitted: Callable[[Admission], None] | None = None,
                     ) -> AsyncIterator[GenerationDelta]:
        """Stream the reply on `target` once the scheduler admits the request. A routed
        request (target.decision set) is logged in the routing log as it ends, however it ends.
        A request that leaves thinking open gets the target model's default."""
        if request.thinking is None and target.model in self.manager.catalog:
            request = dataclasses.replace(request, thinking=self.default_thinking(target.model))
        active: str | None = None
        last: GenerationDelta | None = None
        outcome = "stopped"  # closed early (the user's Stop, a client gone) unless set below
        try:
            async with self.scheduler.admit(target.model, target.reason, private) as admission:
                engine = self.manager.active_engine
                active = self.manager.active_model
                if engine is None or active is None:
                    raise NoModelError(f"Could not make {target.model} active: the model was "
                                       "unloaded before the request started.")
                if on_admitted is not None:
                    on_admitted(admission)
                self._running[request.request_id] = active
                try:
                    async for delta in engine.generate(request):
                        admission.last = last = delta
                        yield delta
                finally:
                    self._running.pop(request.request_id, None)
                    last = admission.last
                    if last is not None and last.tokens > 0 and self._track_tokens_per_s:
                        self.history.record_generation(active, last.tokens, last.elapsed_s,
                                                       last.first_token_s, last.tokens_per_s)
            outcome = "answered"
        except Exception:
            outcome = "failed"
            raise
        finally:
            if target.decision is not None:
                self._log_routed(request.request_id, target.decision, active, outcome, last)

    def _log_routed(self, request_id: str, decision: RoutingDecision, answered: str | None,
                    outcome: str, last: GenerationDelta | None) -> None:
        """The one place a routed request is logged (when the routing log is on)."""
        if self.routing_log is None:
            return
        try:
            self.routing_log.record(
                request_id, decision, answered_model=answered, outcome=outcome,
                tokens=last.tokens if last else None,
                tokens_per_s=last.tokens_per_s if last else None,
                first_token_s=last.first_token_s if last else None)
        except sqlite3.Error as exc:  # e.g. closed while closing: the reply itself stands
            logger.warning("the routed request %s was not logged: %s", request_id, exc)

    def feedback_models(self) -> list[str]:
        """Models a user may name as the one that should have answered: the whole catalog."""
        return list(self.manager.catalog.ids)

    def routed_request(self, request_id: str) -> RoutedRequest | None:
        """The routing log's row for a request (None: not routed, or logging is off)."""
        if self.routing_log is None or not self.routing_log.enabled:
            return None
        return self.routing_log.find(request_id)

    def give_feedback(self, request_id: str, verdict: str,
                      wanted_model: str | None = None) -> RoutedRequest:
        """The user's verdict on a routed reply: "good", or "wrong_model" with the catalog
        model that should have answered (FeedbackError, one sentence, for bad input)."""
        from core.routing_log import FeedbackError

        if self.routing_log is None:
            raise FeedbackError("routing feedback is off: this session keeps no routing log")
        return self.routing_log.give_feedback(request_id, verdict, wanted_model,
                                              self.manager.catalog.ids)

    def side_by_side(self, request: GenerationRequest, models: list[str],
                     private: bool = False) -> AsyncIterator[tuple[int, ModelRun]]:
        """The request on each model in turn (core.side_by_side)."""
        from core.side_by_side import side_by_side

        return side_by_side(self, request, models, private)

    async def abort(self, request_id: str) -> None:
        """Stop a running request (no-op when it already ended)."""
        engine = self.manager.active_engine
        if request_id in self._running and engine is not None:
            await engine.abort(request_id)

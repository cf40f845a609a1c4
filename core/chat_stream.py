"""A chat reply as a stream of plain JSON events, for `vrampilot generate` run locally and for the
control endpoint's /generate (which sends the same events to an attached CLI).

Events, each a dict with "type":
  decision  the router's choice: "explanation" (text) and "decision" (as_dict)
  switch    a switch phase while the reply waits for its model (SwitchEvent's fields)
  delta     "text" and "thinking" pieces
  done      "model", "tokens", "first_token_s", "tokens_per_s", "demo"
  error     "message" and "exit_code" (2: bad input, 1: the engine failed)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from core.chat_session import ChatSession
from core.engine.base import ChatMessage, EngineError, GenerationDelta, GenerationRequest
from core.manager.events import SwitchEvent
from core.models.catalog import UnknownModelError

Event = dict[str, Any]


def prompt_request(prompt: str, request_id: str, *, system: str = "", max_tokens: int = 128,
                   temperature: float = 0.7, top_p: float = 0.95, seed: int | None = None,
                   thinking: bool | None = None) -> GenerationRequest:
    """One user prompt (after an optional system prompt) as a request; thinking None: the
    model's default (core.chat_session)."""
    messages = ((ChatMessage("system", system),) if system.strip() else ()) + (
        ChatMessage("user", prompt),)
    return GenerationRequest(messages=messages, max_tokens=max_tokens, temperature=temperature,
                             top_p=top_p, seed=seed, thinking=thinking, request_id=request_id)


def switch_event_json(event: SwitchEvent) -> Event:
    """A switch event as plain JSON types."""
    return {"type": "switch", **dataclasses.asdict(event), "phase": event.phase.value}


async def reply_events(chat: ChatSession, request: GenerationRequest, model: str = "auto",
                       task_type: str = "unknown", private: bool = False
                       ) -> AsyncIterator[Event]:
    """Route (or take `model`), switch through the manager, stream the reply, as events.

    Switch events of the manager arrive while the reply waits for its model, so the reply runs
    in a task feeding one queue with them; closing this iterator cancels that task (and with it
    the engine request).
    """
    catalog = chat.manager.catalog
    if model != "auto" and model not in catalog:
        try:
            catalog.get(model)
        except UnknownModelError as exc:
            yield {"type": "error", "message": str(exc), "exit_code": 2}
            return
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    unsubscribe = chat.manager.subscribe(lambda e: queue.put_nowait(switch_event_json(e)))

    async def produce() -> None:
        from core.engine.demo_model import ensure_demo_models

        last: GenerationDelta | None = None
        active: str | None = None
        # The session is shared (the GUI, other clients): a decision object other than the one
        # seen before this request began is this request's.
        decision_before = chat.last_decision
        try:
            await asyncio.get_running_loop().run_in_executor(None, ensure_demo_models)
            stream = chat.generate(request, None if model == "auto" else model, task_type,
                                   private)
            async for delta in stream:
                if last is None:
                    active = chat.manager.active_model
                    decision = chat.last_decision
                    if decision is not None and decision is not decision_before:
                        queue.put_nowait({"type": "decision", "explanation": decision.explain(),
                                          "decision": decision.as_dict()})
                queue.put_nowait({"type": "delta", "text": delta.text,
                                  "thinking": delta.thinking})
                last = delta
            entry = catalog.get(active) if active is not None and active in catalog else None
            queue.put_nowait({
                "type": "done", "model": active,
                "tokens": last.tokens if last else 0,
                "first_token_s": last.first_token_s if last else None,
                "tokens_per_s": last.tokens_per_s if last else None,
                "demo": entry is not None and entry.priority == "DEMO"})
        except EngineError as exc:
            queue.put_nowait({"type": "error", "message": str(exc), "exit_code": 1})
        except Exception as exc:  # noqa: BLE001 - e.g. the owner closing: one line, not a trace
            queue.put_nowait({"type": "error", "message": f"{type(exc).__name__}: {exc}",
                              "exit_code": 1})
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(produce())
    task.set_name(f"reply-{request.request_id}")
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        unsubscribe()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

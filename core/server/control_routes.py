"""vrampilot's own routes (what the CLI and the window's second launch use), on the owner's
runtime: owner, status, models, history, route, switch, unload, generate (NDJSON stream),
events (server-sent switch phases and alerts) and raise.

Handlers are `async def`: they run on the owner's event loop, where the manager and the window
live, never in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from core.chat_stream import prompt_request, reply_events, switch_event_json
from core.manager.events import SwitchEvent
from core.models.catalog import UnknownModelError
from core.telemetry.alerts import AlertEvent
from core.telemetry.snapshot import Sample

if TYPE_CHECKING:
    from core.runtime import Runtime

EVENT_QUEUE_SIZE = 1000  # per /events client; a client that far behind loses events, not memory


@dataclass
class Owner:
    """Who serves: the app (with a window to raise) or a headless command.

    simulate/config: the set-up it runs, so a CLI asking about another one answers itself.
    """

    kind: str
    simulate: str | None = None
    config: str | None = None
    raise_window: Callable[[], None] | None = None
    pid: int = field(default_factory=os.getpid)
    raised: int = 0
    streams: set[asyncio.Queue[tuple[str, Any] | None]] = field(default_factory=set)

    def describe(self, runtime: Runtime) -> dict[str, Any]:
        state = runtime.manager.state
        return {"pid": self.pid, "kind": self.kind, "simulate": self.simulate,
                "config": self.config, "active_model": state.active_model,
                "switching_to": state.switching_to, "raised": self.raised}

    def end_streams(self) -> None:
        """Closing: end every /events stream, so the server need not wait for them."""
        for queue in self.streams:
            _put(queue, None)


def _put(queue: asyncio.Queue[Any], item: Any) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(item)


class RouteBody(BaseModel):
    text: str
    task_type: str = "unknown"
    private: bool = False


class SwitchBody(BaseModel):
    model: str
    private: bool = False


class GenerateBody(BaseModel):
    prompt: str = Field(min_length=1)
    model: str = "auto"
    task_type: str = "unknown"
    max_tokens: int = Field(128, gt=0)
    temperature: float = Field(0.7, ge=0.0)
    private: bool = False
    system: str = ""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    thinking: bool | None = None  # None: the model's default


async def _sample(runtime: Runtime) -> Sample:
    """The sampler's latest tick while it runs (the app), else one read (a headless owner)."""
    latest = runtime.sampler.latest
    if runtime.sampler.running and latest is not None:
        return latest
    return await asyncio.get_running_loop().run_in_executor(None, runtime.sampler.sample_once)


def _known_model(runtime: Runtime, model_id: str) -> None:
    try:
        runtime.manager.catalog.get(model_id)
    except UnknownModelError as exc:
        raise HTTPException(404, detail=str(exc)) from None


def control_router(runtime: Runtime, owner: Owner) -> APIRouter:
    """The control routes on this runtime (the owner's)."""
    from core.cli.history import history_report
    from core.cli.models import models_report
    from core.cli.status import format_table, to_json

    router = APIRouter()

    @router.get("/owner")
    async def owner_info() -> dict[str, Any]:
        return owner.describe(runtime)

    @router.get("/status")
    async def status() -> dict[str, Any]:
        """What `vrampilot status` shows, from the owner's devices and alerts."""
        sample = await _sample(runtime)
        alerts = runtime.sampler.alerts.active()
        return {"status": to_json(sample, alerts), "text": format_table(sample, alerts),
                "owner": owner.describe(runtime)}

    @router.get("/models")
    async def models() -> dict[str, Any]:
        """The catalog against the device now (the active model's memory counts as free)."""
        buffer = runtime.config.buffer_bytes
        return models_report(runtime.manager.catalog, runtime.router.estimator,
                             runtime.chat.hardware_state(), buffer)

    @router.get("/history")
    async def history(limit: int = Query(20, ge=0)) -> dict[str, Any]:
        return history_report(runtime.history_store, limit)

    @router.post("/route")
    async def route(body: RouteBody) -> dict[str, Any]:
        decision = runtime.router.route(body.text, body.task_type, runtime.chat.hardware_state(),
                                        body.private)
        return {"decision": decision.as_dict(), "explanation": decision.explain()}

    @router.post("/switch")
    async def switch(body: SwitchBody) -> dict[str, Any]:
        _known_model(runtime, body.model)
        result = await runtime.manager.switch_to(body.model, reason="manual",
                                                 private=body.private)
        return {"ok": result.ok, "outcome": result.outcome, "active": result.active,
                "errors": list(result.errors), "total_s": result.total_s}

    @router.post("/unload")
    async def unload() -> dict[str, Any]:
        await runtime.manager.unload()
        return {"active": runtime.manager.active_model}

    @router.post("/generate")
    async def generate(body: GenerateBody) -> StreamingResponse:
        """The reply as NDJSON events (core.chat_stream); a client that disconnects ends it."""
        request = prompt_request(body.prompt, f"ctl-{uuid.uuid4().hex[:12]}",
                                 system=body.system, max_tokens=body.max_tokens,
                                 temperature=body.temperature, top_p=body.top_p,
                                 seed=body.seed, thinking=body.thinking)

        async def lines() -> AsyncIterator[str]:
            events = reply_events(runtime.chat, request, body.model, body.task_type,
                                  body.private)
            async for event in events:
                yield json.dumps(event) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @router.get("/events")
    async def events() -> StreamingResponse:
        """Server-sent events: `switch` (each phase) and `alert` (each alert change)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(EVENT_QUEUE_SIZE)

        def on_switch(event: SwitchEvent) -> None:
            _put(queue, ("switch", switch_event_json(event)))

        def on_sample(_sample: Sample, alerts: list[AlertEvent]) -> None:
            # The sampler's thread: hand over to the loop.
            for alert in alerts:
                loop.call_soon_threadsafe(_put, queue, ("alert", dataclasses.asdict(alert)))

        unsubscribe = [runtime.manager.subscribe(on_switch), runtime.sampler.subscribe(on_sample)]
        owner.streams.add(queue)

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": vrampilot events\n\n"  # a comment: the client sees the stream open
                while (item := await queue.get()) is not None:
                    kind, data = item
                    yield f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
            finally:
                owner.streams.discard(queue)
                for undo in unsubscribe:
                    with contextlib.suppress(ValueError):
                        undo()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @router.post("/raise")
    async def raise_window() -> dict[str, Any]:
        """Bring the owner's window to the front (a second app launch asks this)."""
        if owner.raise_window is None:
            raise HTTPException(409, detail=(
                f"the model is held by a headless `vrampilot {owner.kind}` (pid {owner.pid}), "
                "which has no window; start the app once it has finished"))
        owner.raise_window()
        owner.raised += 1
        return {"raised": True, "pid": owner.pid}

    return router

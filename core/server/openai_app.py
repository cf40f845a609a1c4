"""The local OpenAI-compatible API as a FastAPI app: /v1/models, /v1/chat/completions (streamed
and not), /health and /metrics. `create_app` is the one builder; more routes (vrampilot's own
control routes) are added with `app.include_router(...)` and share its auth and error shape.

Every generation goes through the runtime's ChatSession, so through the fair scheduler: a
request for another model waits for the running ones, then the switch happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from core.chat_session import Target
from core.engine.base import (
    ChatMessage,
    EngineError,
    GenerationDelta,
    GenerationRequest,
    PromptTooLongError,
)
from core.models.catalog import UnknownModelError
from core.router.selection import RoutingDecision
from core.scheduler import Admission, NoModelError, QueueFullError, RequestScheduler
from core.server.metrics import ApiMetrics
from core.server.settings import ServerSettings, resolve_api_key

if TYPE_CHECKING:
    from core.runtime import Runtime

AUTO = "auto"
DEFAULT_MAX_TOKENS = 1024  # when a request names none (the engine also caps it by the context)
OPEN_PATHS = ("/health",)  # answered without the API key (liveness probes)
T = TypeVar("T")


# -- request body ------------------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.text or "" for p in self.content if p.type == "text")


class TemplateKwargs(BaseModel):
    model_config = ConfigDict(extra="allow")
    enable_thinking: bool | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class VrampilotOptions(BaseModel):
    """The extra field `vrampilot`: what the OpenAI schema has no place for."""

    model_config = ConfigDict(extra="forbid")
    private: bool = False  # never sent to the remote endpoint
    task_type: str = "unknown"  # a hint for the router (model "auto")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # tools send fields we do not use; they are ignored

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    chat_template_kwargs: TemplateKwargs | None = None
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says
    vrampilot: VrampilotOptions | None = None


# -- errors ------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


def _validation_error(exc: RequestValidationError) -> ApiError:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return ApiError(400, f"The request body is not valid JSON: {err.get('msg')}.",
                        code="invalid_json")
    field = ".".join(loc) or "body"
    return ApiError(400, f"Invalid field `{field}`: {err.get('msg')}.", param=field,
                    code="invalid_field")


def engine_error(exc: Exception, known: tuple[str, ...]) -> ApiError:
    """Map a core failure to its HTTP answer."""
    if isinstance(exc, UnknownModelError):
        return ApiError(404, f"The model `{exc.args[0] if exc.args else '?'}` does not exist; "
                        f"available: {', '.join(known)}.", param="model",
                        code="model_not_found")
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, f"The prompt has {exc.prompt_tokens} tokens but the loaded model's "
                        f"context holds {exc.max_model_len}.", param="messages",
                        code="context_length_exceeded")
    if isinstance(exc, QueueFullError):
        return ApiError(503, str(exc), type_="server_overloaded", code="queue_full",
                        headers={"Retry-After": str(math.ceil(exc.retry_after_s))})
    if isinstance(exc, NoModelError):
        return ApiError(503, str(exc), type_="model_unavailable", code="no_model_fits")
    return ApiError(500, str(exc) or type(exc).__name__, type_="server_error",
                    code="engine_error")


# -- one generation, pumped by its own task ----------------------------------------------------
_END = object()


class _Generation:
    """Runs one ChatSession stream in its own asyncio task and hands the deltas over a queue.

    Why a task: the HTTP side (Starlette, anyio) cancels with level-triggered cancel scopes, under
    which the engine's clean-up (aborting its request) would be cancelled again at every await.
    Cancelling this task is a plain asyncio cancel: the engine's finally blocks run to the end.
    """

    def __init__(self, start: Callable[[Callable[[Admission], None]],
                                       AsyncIterator[GenerationDelta]]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.admission: Admission | None = None  # set once the scheduler admits the request
        self._error: Exception | None = None  # met while draining a batch, raised next time
        self._task = asyncio.ensure_future(self._pump(start(self._on_admitted)))

    def _on_admitted(self, admission: Admission) -> None:
        self.admission = admission

    async def _pump(self, stream: AsyncIterator[GenerationDelta]) -> None:
        try:
            async for delta in stream:
                self._queue.put_nowait(delta)
            self._queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the HTTP side, typed
            self._queue.put_nowait(exc)

    async def next(self) -> GenerationDelta | None:
        """The next delta; None at the end; raises what the stream raised."""
        item = await self._queue.get()
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, GenerationDelta)
        return item

    async def next_batch(self) -> list[GenerationDelta | None]:
        """Every delta ready now (at least one; None marks the end). Under several streams the
        deltas come in bursts: one write per burst instead of one per delta. Raises what the
        stream raised, once the deltas before it are handed out."""
        if self._error is not None:
            raise self._error
        items = [await self._queue.get()]
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        out: list[GenerationDelta | None] = []
        for item in items:
            if item is _END:
                out.append(None)
                break
            if isinstance(item, Exception):
                if not out:
                    raise item
                self._error = item
                break
            out.append(item)
        return out

    def cancel(self) -> None:
        self._task.cancel()


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await work; if the client disconnects first, cancel it and raise ClientDisconnected."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # The body is read already: the next ASGI message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise ClientDisconnected()
    return task.result()


# -- the app -----------------------------------------------------------------------------------
def create_app(runtime: Runtime, scheduler: RequestScheduler,
               settings: ServerSettings) -> FastAPI:
    """The API over one runtime. Raises ServerConfigError for a non-loopback host without key."""
    api_key = resolve_api_key(settings)
    metrics = ApiMetrics(runtime, scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        metrics.close()

    async def require_key(request: Request) -> None:
        if api_key is None or request.url.path in OPEN_PATHS:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(),
                                                                    api_key.encode()):
            raise ApiError(401, "Missing or wrong API key: send `Authorization: Bearer KEY`.",
                           type_="authentication_error", code="invalid_api_key")

    app = FastAPI(title="vrampilot", lifespan=lifespan, dependencies=[Depends(require_key)],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    def known_ids() -> tuple[str, ...]:
        return (AUTO, *runtime.manager.catalog.ids)

    @app.get("/health")
    async def health() -> JSONResponse:
        manager = runtime.manager
        engine = manager.active_engine
        healthy = engine is None or engine.is_healthy()
        stats = scheduler.stats()
        return JSONResponse({"status": "ok" if healthy else "engine_unhealthy",
                             "active_model": manager.active_model,
                             "switching_to": manager.state.switching_to,
                             "queued": stats.queued, "running": stats.running},
                            status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        manager = runtime.manager
        data: list[dict[str, Any]] = [{
            "id": AUTO, "object": "model", "created": 0, "owned_by": "vrampilot",
            "vrampilot": {"router": True, "description": "the router picks a model per request"}}]
        for entry in manager.catalog:
            info: dict[str, Any] = {"name": entry.display_name, "engine": entry.engine,
                                    "enabled": entry.enabled,
                                    "active": entry.id == manager.active_model,
                                    "on_disk": None if entry.is_remote
                                    else manager.catalog.is_on_disk(entry)}
            try:
                plan = manager.plan_switch(entry.id)
                info.update(fits=plan.ok, context=plan.fit.context if plan.fit else None,
                            refusal=plan.refusal)
            except (EngineError, ValueError) as exc:
                info.update(fits=False, context=None, refusal=str(exc))
            data.append({"id": entry.id, "object": "model", "created": 0,
                         "owned_by": "vrampilot", "vrampilot": info})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest,
                               request: Request) -> JSONResponse | StreamingResponse:
        opts = body.vrampilot or VrampilotOptions()
        private = opts.private or request.headers.get("x-vrampilot-private", "").lower() in (
            "1", "true", "yes")
        gen_request = _generation_request(body)
        chat = runtime.chat
        try:
            target = chat.resolve(gen_request, body.model, opts.task_type, private)
        except (EngineError, KeyError) as exc:
            raise engine_error(exc, known_ids()) from exc
        run = _Generation(lambda admitted: chat.stream(gen_request, target, private,
                                                       on_admitted=admitted))
        return await _answer(body, request, run, target, gen_request.request_id, known_ids())

    return app


def _generation_request(body: ChatCompletionRequest) -> GenerationRequest:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    # Not asked: the chat template's own default decides, as on vLLM's own server.
    thinking = body.chat_template_kwargs.enable_thinking if body.chat_template_kwargs else None
    return GenerationRequest(
        tuple(ChatMessage("system" if m.role == "developer" else m.role, m.text())
              for m in body.messages),
        max_tokens=body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=body.temperature, top_p=body.top_p, seed=body.seed,
        request_id=f"chatcmpl-{uuid.uuid4().hex}", thinking=thinking, stop=stop,
        ignore_eos=body.ignore_eos)


def _route_info(target: Target) -> dict[str, Any] | None:
    d: RoutingDecision | None = target.decision
    if d is None:
        return None
    return {"model": d.model_id, "score": round(d.score, 4), "band": d.band, "rule": d.rule,
            "candidates": list(d.candidates),
            "rejected": [{"model": r.model_id, "kind": r.kind, "reason": r.reason}
                         for r in d.rejected]}


def _headers(target: Target, run: _Generation) -> dict[str, str]:
    active = run.admission.active if run.admission else None
    headers = {"X-Vrampilot-Model": active or target.model,
               "X-Vrampilot-Requested-Model": target.model}
    d = target.decision
    if d is not None:
        headers["X-Vrampilot-Route"] = (f"model={d.model_id}; band={d.band}; "
                                        f"score={d.score:.3f}; rule={d.rule}")
    return {k: v.encode("ascii", "replace").decode() for k, v in headers.items()}


def _extra(body: ChatCompletionRequest, target: Target, run: _Generation) -> dict[str, Any]:
    admission = run.admission
    return {"requested": body.model, "model": target.model,
            "active": admission.active if admission else None,
            "switch": admission.result.outcome if admission else None,
            "route": _route_info(target)}


async def _answer(body: ChatCompletionRequest, request: Request, run: _Generation,
                  target: Target, completion_id: str,
                  known: tuple[str, ...]) -> JSONResponse | StreamingResponse:
    created = int(time.time())

    async def collect(first: GenerationDelta | None) -> tuple[str, str, GenerationDelta | None]:
        text, thinking, last = "", "", first
        delta: GenerationDelta | None = first
        while delta is not None:
            text += delta.text
            thinking += delta.thinking
            last = delta
            delta = await run.next()
        return text, thinking, last

    # One place for a client that went away or an engine error, streamed or not.
    try:
        first = await _unless_disconnected(request, run.next())
        model = (run.admission.active if run.admission else None) or target.model
        if body.stream:
            return StreamingResponse(
                _sse(body, run, first, completion_id, created, model, _extra(body, target, run)),
                media_type="text/event-stream", headers=_headers(target, run))
        text, thinking, last = await _unless_disconnected(request, collect(first))
    except ClientDisconnected:
        run.cancel()
        return JSONResponse({"error": {"message": "client disconnected", "type": "cancelled",
                                       "param": None, "code": None}}, status_code=499)
    except (EngineError, KeyError) as exc:
        run.cancel()
        raise engine_error(exc, known) from exc
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["reasoning_content"] = thinking
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": _finish_reason(last)}],
        "usage": _usage(last),
        "vrampilot": {**_extra(body, target, run), **_timing(last)}},
        headers=_headers(target, run))


def _finish_reason(delta: GenerationDelta | None) -> str:
    reason = delta.finish_reason if delta is not None else None
    return reason if reason in ("length", "stop") else "stop"


def _usage(last: GenerationDelta | None) -> dict[str, int]:
    completion = last.tokens if last else 0
    prompt = (last.prompt_tokens or 0) if last else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _timing(last: GenerationDelta | None) -> dict[str, float | None]:
    return {"first_token_s": last.first_token_s if last else None,
            "tokens_per_s": last.tokens_per_s if last else None}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


class _ChunkWriter:
    """The stream's content chunks, built as text around the JSON-encoded strings: the chunk's
    fixed part is encoded once per stream, not once per delta (the same bytes as _event)."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        head = json.dumps({"id": completion_id, "object": "chat.completion.chunk",
                           "created": created, "model": model}, separators=(",", ":"))
        self._head = f'data: {head[:-1]},"choices":[{{"index":0,"delta":{{'
        self._tail = '},"finish_reason":null}]}\n\n'

    def content(self, deltas: list[GenerationDelta]) -> str:
        """One event for the deltas of a batch ("" when they carry no text)."""
        if len(deltas) == 1:
            text, thinking = deltas[0].text, deltas[0].thinking
        else:
            text = "".join([d.text for d in deltas])
            thinking = "".join([d.thinking for d in deltas])
        if text and thinking:
            body = f'"content":{json.dumps(text)},"reasoning_content":{json.dumps(thinking)}'
        elif text:
            body = f'"content":{json.dumps(text)}'
        elif thinking:
            body = f'"reasoning_content":{json.dumps(thinking)}'
        else:
            return ""
        return self._head + body + self._tail


async def _sse(body: ChatCompletionRequest, run: _Generation, first: GenerationDelta | None,
               completion_id: str, created: int, model: str,
               extra: dict[str, Any]) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk shape. An engine failure mid-stream ends the stream
    with an error event, then [DONE]: never a hang.

    The deltas ready at once (a batch) go out as one content chunk: under load the engine's
    deltas come in bursts, and one event and one write per burst is what keeps up with it."""

    def chunk(delta: dict[str, Any], finish: str | None = None,
              **more: Any) -> dict[str, Any]:
        return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}], **more}

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = _ChunkWriter(completion_id, created, model)
    last: GenerationDelta | None = None
    try:
        yield _event(chunk({"role": "assistant", "content": ""}, vrampilot=extra))
        batch: list[GenerationDelta | None] = [first]
        while True:
            deltas = [d for d in batch if d is not None]
            if deltas:
                last = deltas[-1]
                event = writer.content(deltas)
                if event:
                    yield event
            if len(deltas) < len(batch):  # None: the end
                break
            batch = await run.next_batch()
        yield _event(chunk({}, _finish_reason(last), vrampilot=_timing(last)))
        if include_usage:
            usage = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [], "usage": _usage(last)}
            yield _event(usage)
    except (EngineError, KeyError) as exc:
        yield _event(engine_error(exc, ()).body())
    finally:
        run.cancel()  # a disconnect lands here: the engine request is aborted
    yield "data: [DONE]\n\n"

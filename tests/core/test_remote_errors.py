"""RemoteEngine's error paths against a loopback aiohttp stub (no vLLM, fast).

The stub speaks the OpenAI-compatible API the way a server may misbehave: 404 and 500 answers, a
model it does not serve, malformed or error events in the stream, a stream closed early, and stalls
that never close the connection. Each case checks the typed error and that every wait is bounded
by the configured timeout. (The happy path against a real vLLM server is test_remote_engine.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from core.engine.base import (
    ChatMessage,
    GenerationDelta,
    GenerationRequest,
    LoadSpec,
    RemoteAuthError,
    RemoteError,
    RemoteModelNotServedError,
    RemoteStreamError,
)
from core.engine.remote_engine import RemoteConfig, RemoteEngine

SERVED = "stub-model"
SPEC = LoadSpec(model_id="remote", path="", max_model_len=512)
READ_TIMEOUT_S = 0.5
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stub:
    """The server's behaviour for /v1/models and /v1/chat/completions, set per test."""

    def __init__(self) -> None:
        self.models: Handler = self.list_models
        self.chat: Handler = self.good_stream
        self.release = asyncio.Event()  # ends every stall at teardown
        self.payloads: list[dict[str, Any]] = []

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": SERVED, "object": "model"}]})

    async def good_stream(self, request: web.Request) -> web.StreamResponse:
        resp = await self.open_stream(request)
        await self.event(resp, {"choices": [{"delta": {"reasoning_content": "think "}}]})
        for word in ("Hello", " there"):
            await self.event(resp, {"choices": [{"delta": {"content": word}}]})
        await self.event(resp, {"choices": [{"delta": {}, "finish_reason": "stop"}]})
        await self.event(resp, {"choices": [], "usage": {"completion_tokens": 3}})
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def open_stream(self, request: web.Request) -> web.StreamResponse:
        self.payloads.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        return resp

    @staticmethod
    async def event(resp: web.StreamResponse, data: dict[str, Any]) -> None:
        await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")

    async def stall(self) -> None:
        await self.release.wait()


@asynccontextmanager
async def serving(stub: Stub) -> AsyncIterator[str]:
    async def models(request: web.Request) -> web.StreamResponse:
        return await stub.models(request)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await stub.chat(request)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        stub.release.set()
        await runner.cleanup()


def engine_for(url: str, model: str = SERVED) -> RemoteEngine:
    return RemoteEngine(RemoteConfig(base_url=url, model=model, connect_retries=0,
                                     connect_timeout_s=2, read_timeout_s=READ_TIMEOUT_S))


def ask(text: str = "hi", request_id: str = "") -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", text),), max_tokens=8,
                             request_id=request_id)


async def collect(engine: RemoteEngine, got: list[GenerationDelta],
                  request: GenerationRequest | None = None) -> None:
    async for delta in engine.generate(request or ask()):
        got.append(delta)


def run(stub: Stub, body: Callable[[str], Awaitable[None]]) -> None:
    async def scenario() -> None:
        async with serving(stub) as url:
            await asyncio.wait_for(body(url), 20)  # a hang is a failure, not a stuck run

    asyncio.run(scenario())


def test_the_stub_streams_a_reply() -> None:
    """The stub is a working server: the error cases below differ from this in one thing each."""
    stub = Stub()
    got: list[GenerationDelta] = []

    async def body(url: str) -> None:
        engine = engine_for(url)
        await engine.load(SPEC)
        assert engine.is_healthy()
        await collect(engine, got)

    run(stub, body)
    assert "".join(d.text for d in got) == "Hello there"
    assert "".join(d.thinking for d in got) == "think "
    assert got[-1].finished
    assert got[-1].finish_reason == "stop"
    assert got[-1].tokens == 3
    assert stub.payloads[0]["model"] == SERVED
    assert stub.payloads[0]["stream"] is True


def test_models_answering_404_is_a_remote_error() -> None:
    stub = Stub()

    async def not_found(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "no such route here"}, status=404)

    stub.models = not_found

    async def body(url: str) -> None:
        engine = engine_for(url)
        with pytest.raises(RemoteError, match=r"HTTP 404: .*no such route here") as info:
            await engine.load(SPEC)
        assert not isinstance(info.value, RemoteAuthError | RemoteStreamError)
        assert not engine.is_healthy()

    run(stub, body)


def test_chat_answering_500_is_a_remote_error_with_the_detail() -> None:
    stub = Stub()

    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="engine exploded\nsecond line")

    stub.chat = broken

    async def body(url: str) -> None:
        engine = engine_for(url)
        await engine.load(SPEC)
        with pytest.raises(RemoteError, match="HTTP 500: engine exploded second line"):
            await collect(engine, [])

    run(stub, body)


def test_a_model_the_server_does_not_serve() -> None:
    stub = Stub()

    async def unknown_model(request: web.Request) -> web.StreamResponse:
        model = (await request.json())["model"]  # what vLLM answers for a model it lacks
        return web.json_response({"error": {"message": f"The model `{model}` does not exist.",
                                            "code": 404}}, status=404)

    stub.chat = unknown_model

    async def body(url: str) -> None:
        engine = engine_for(url, model="other-model")
        with pytest.raises(RemoteModelNotServedError,
                           match=r"does not serve 'other-model' \(it serves: stub-model\)"):
            await engine.load(SPEC)
        assert not engine.is_healthy()
        # Streaming without a load: the server's 404 is a RemoteError naming the model.
        with pytest.raises(RemoteError, match=r"HTTP 404: .*other-model"):
            await collect(engine, [])

    run(stub, body)


def test_a_malformed_event_is_a_stream_error_after_the_good_ones() -> None:
    stub = Stub()

    async def malformed(request: web.Request) -> web.StreamResponse:
        resp = await stub.open_stream(request)
        await stub.event(resp, {"choices": [{"delta": {"content": "Hello"}}]})
        await resp.write(b'data: {"choices": [{"delta": \n\n')
        return resp

    stub.chat = malformed
    got: list[GenerationDelta] = []

    async def body(url: str) -> None:
        with pytest.raises(RemoteStreamError, match="malformed event"):
            await collect(engine_for(url), got)

    run(stub, body)
    assert [d.text for d in got] == ["Hello"]


def test_an_error_event_in_the_stream_is_a_remote_error() -> None:
    stub = Stub()

    async def error_event(request: web.Request) -> web.StreamResponse:
        resp = await stub.open_stream(request)
        await stub.event(resp, {"choices": [{"delta": {"content": "Hel"}}]})
        await stub.event(resp, {"error": {"message": "out of KV cache", "code": 500}})
        return resp

    stub.chat = error_event

    async def body(url: str) -> None:
        with pytest.raises(RemoteError, match=r"reported an error: .*out of KV cache") as info:
            await collect(engine_for(url), [])
        assert not isinstance(info.value, RemoteStreamError)

    run(stub, body)


def test_a_stream_closed_before_done_is_a_stream_error() -> None:
    stub = Stub()

    async def cut_short(request: web.Request) -> web.StreamResponse:
        resp = await stub.open_stream(request)
        await stub.event(resp, {"choices": [{"delta": {"content": "Hel"}}]})
        return resp  # the body ends without [DONE]

    stub.chat = cut_short

    async def body(url: str) -> None:
        with pytest.raises(RemoteStreamError, match="before the reply was complete"):
            await collect(engine_for(url), [])

    run(stub, body)


def stalls_after(events: int, stub: Stub) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = await stub.open_stream(request)
        for i in range(events):
            await stub.event(resp, {"choices": [{"delta": {"content": f"t{i}"}}]})
        await stub.stall()  # neither another byte nor a close
        return resp

    return handler


@pytest.mark.parametrize("events", [0, 2])
def test_a_stall_without_closing_ends_within_the_read_timeout(events: int) -> None:
    stub = Stub()
    stub.chat = stalls_after(events, stub)
    got: list[GenerationDelta] = []
    waited: list[float] = []

    async def body(url: str) -> None:
        started = time.monotonic()
        with pytest.raises(RemoteStreamError, match=r"sent nothing for|stalled"):
            await collect(engine_for(url), got)
        waited.append(time.monotonic() - started)

    run(stub, body)
    assert len(got) == events
    assert READ_TIMEOUT_S * 0.9 <= waited[0] < READ_TIMEOUT_S + 3


def test_a_stall_before_the_answer_ends_within_the_read_timeout() -> None:
    stub = Stub()

    async def silent(request: web.Request) -> web.StreamResponse:
        await stub.stall()
        return web.Response(text="too late")

    stub.models = silent

    async def body(url: str) -> None:
        started = time.monotonic()
        with pytest.raises(RemoteStreamError, match="sent nothing for"):
            await engine_for(url).load(SPEC)
        assert READ_TIMEOUT_S * 0.9 <= time.monotonic() - started < READ_TIMEOUT_S + 3

    run(stub, body)


def test_abort_ends_a_stalled_stream_at_once() -> None:
    stub = Stub()
    stub.chat = stalls_after(1, stub)
    got: list[GenerationDelta] = []

    async def body(url: str) -> None:
        engine = RemoteEngine(RemoteConfig(base_url=url, model=SERVED, read_timeout_s=30))
        task = asyncio.ensure_future(collect(engine, got, ask(request_id="r1")))
        while not got:  # noqa: ASYNC110 - the first delta arrives from the stub
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await engine.abort("r1")
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 5  # not the 30 s read timeout

    run(stub, body)
    assert got[-1].finished
    assert got[-1].finish_reason == "abort"


def test_the_key_is_sent_per_request_and_never_logged(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The client logs requests at DEBUG (headers included): the key must not be in them; a key
    changed in the environment is used from the next request on."""
    stub = Stub()
    seen: list[str | None] = []

    async def models(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return await stub.list_models(request)

    stub.models = models
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VRAMPILOT_TEST_KEY", "sk-first-secret")

    async def body(url: str) -> None:
        engine = RemoteEngine(RemoteConfig(base_url=url, model=SERVED, connect_retries=0,
                                           api_key_env="VRAMPILOT_TEST_KEY"))
        await engine.load(SPEC)
        monkeypatch.setenv("VRAMPILOT_TEST_KEY", "sk-second-secret")
        await engine.load(SPEC)
        monkeypatch.delenv("VRAMPILOT_TEST_KEY")
        await engine.load(SPEC)
        await collect(engine, [])
        await engine.shutdown()

    run(stub, body)
    assert seen == ["Bearer sk-first-secret", "Bearer sk-second-secret", None]
    assert any(r.name.startswith("openai") for r in caplog.records)  # it did log the requests
    assert "secret" not in caplog.text


def test_the_request_carries_the_sampling_fields_and_vllms_extensions() -> None:
    stub = Stub()

    async def body(url: str) -> None:
        request = GenerationRequest(messages=(ChatMessage("user", "hi"),), max_tokens=5,
                                    temperature=0.2, top_p=0.5, seed=7, stop=("END",),
                                    thinking=True, ignore_eos=True)
        await collect(engine_for(url), [], request)

    run(stub, body)
    sent = stub.payloads[0]
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (5, 0.2,
                                                                                      0.5, 7)
    assert sent["stop"] == ["END"]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}  # vLLM's, in extra_body
    assert sent["ignore_eos"] is True

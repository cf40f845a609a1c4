"""The local API with real vLLM demo models, driven by the official `openai` client as any other
program would: streaming and not, model "auto", a switch through the `model` field, concurrent
clients on two models (switches counted from the history store), a disconnect that aborts the
engine request, a prompt longer than the context, and an engine that dies mid-stream.

One server for the module (each engine load takes 20+ s); the tests run in file order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import psutil
import pytest

from core.engine.demo_model import ensure_demo_models
from tests.core.api_harness import ServedRuntime

pytestmark = pytest.mark.vllm

A, B = "demo-tiny-a", "demo-tiny-b"
HI = [{"role": "user", "content": "Say hello."}]
EOS = {"ignore_eos": True}  # vLLM's extension: the random demo weights may stop at once


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRuntime]:
    data = tmp_path_factory.mktemp("api-vllm-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VRAMPILOT_DATA_DIR", str(data))
        ensure_demo_models(data / "models")
        with ServedRuntime(data) as s:
            yield s


def client(served: ServedRuntime) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0,
                         timeout=600)


def switches(served: ServedRuntime) -> list[tuple[str | None, str, str]]:
    return [(r.from_model, r.to_model, r.outcome)
            for r in reversed(served.runtime.history_store.recent(limit=1000))]


def test_chat_completion_not_streamed(served: ServedRuntime) -> None:
    raw = client(served).chat.completions.with_raw_response.create(
        model=A, messages=HI, max_tokens=12, temperature=0, seed=1, extra_body=EOS)
    reply = raw.parse()
    assert raw.headers["x-vrampilot-model"] == A
    assert reply.model == A
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens > 0
    assert reply.choices[0].message.content
    extra: dict[str, Any] = reply.model_extra["vrampilot"]  # type: ignore[index]
    assert extra["active"] == A
    assert extra["tokens_per_s"] > 0
    # the seed is honoured: sampling at temperature 1 with one seed gives one text
    sampled = [client(served).chat.completions.create(
        model=A, messages=HI, max_tokens=12, temperature=1.0, top_p=0.9, seed=7,
        extra_body=EOS).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_chat_completion_streamed_with_usage(served: ServedRuntime) -> None:
    stream = client(served).chat.completions.create(
        model=A, messages=HI, max_tokens=16, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16


def test_stop_sequence_and_max_tokens(served: ServedRuntime) -> None:
    long = client(served).chat.completions.create(
        model=A, messages=HI, max_tokens=40, temperature=0, seed=3, extra_body=EOS)
    text = long.choices[0].message.content or ""
    assert len(text) > 4
    stop = text[len(text) // 2:len(text) // 2 + 2]
    cut = client(served).chat.completions.create(
        model=A, messages=HI, max_tokens=40, temperature=0, seed=3, extra_body=EOS, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in (cut.choices[0].message.content or "")
    assert len(cut.choices[0].message.content or "") < len(text)


def test_auto_lets_the_router_pick_and_says_why(served: ServedRuntime) -> None:
    from core.routing_log import RoutingLog

    before = len(RoutingLog(served.runtime.history_store).all())
    raw = client(served).chat.completions.with_raw_response.create(
        model="auto", messages=HI, max_tokens=4)
    reply = raw.parse()
    route = reply.model_extra["vrampilot"]["route"]  # type: ignore[index]
    assert route["model"] in (A, B, "demo-small")  # the local demo tier
    assert raw.headers["x-vrampilot-route"].startswith(f"model={route['model']};")
    assert raw.headers["x-vrampilot-model"] == reply.model
    # The API's "auto" is a routed request: logged with the decision and the reply's speed.
    deadline = time.monotonic() + 10
    while len(logged := RoutingLog(served.runtime.history_store).all()) == before:
        assert time.monotonic() < deadline, "the routed request was not logged"
        time.sleep(0.05)
    assert (logged[-1].decided_model, logged[-1].answered_model) == (route["model"], reply.model)
    assert logged[-1].outcome == "answered"
    assert reply.usage is not None
    assert logged[-1].tokens == reply.usage.completion_tokens  # tokens/s needs two or more


def test_model_field_switches(served: ServedRuntime) -> None:
    before = len(switches(served))
    raw = client(served).chat.completions.with_raw_response.create(
        model=B, messages=HI, max_tokens=4)
    assert raw.headers["x-vrampilot-model"] == B
    new = switches(served)[before:]
    assert [(to, outcome) for _, to, outcome in new] in ([(B, "ready")], [])
    assert served.runtime.manager.active_model == B


def test_two_clients_alternating_models_are_grouped(served: ServedRuntime) -> None:
    """8 interleaved requests (two clients, two models): every one answered, <= 3 switches."""
    before = len(switches(served))
    clients = [client(served), client(served)]

    def ask(i: int) -> str:
        time.sleep(0.05 * i)  # arrival order A, B, A, B, ...
        model = (A, B)[i % 2]
        reply = clients[i % 2].chat.completions.create(model=model, messages=HI, max_tokens=6)
        return reply.model

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(ask, range(8)))
    assert answered == [A, B] * 4
    new = switches(served)[before:]
    assert all(outcome == "ready" for *_, outcome in new)
    assert len(new) <= 3, new
    stats = served.runtime.scheduler.stats()
    assert stats.queued == 0
    assert stats.running == 0


def test_client_disconnect_aborts_the_engine_request(served: ServedRuntime) -> None:
    engine = served.runtime.manager.active_engine
    assert engine is not None
    llm = engine._llm  # type: ignore[attr-defined]
    cancelled_before = sum(n for (_m, o), n in served.runtime.scheduler.stats().outcomes.items()
                           if o == "cancelled")
    stream = client(served).chat.completions.create(
        model=served.runtime.manager.active_model or A, messages=HI, max_tokens=100_000,
        stream=True, extra_body=EOS)
    it = iter(stream)
    for _ in range(3):
        next(it)
    assert llm.output_processor.get_num_unfinished_requests() == 1
    stream.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and llm.output_processor.get_num_unfinished_requests():
        time.sleep(0.05)
    assert llm.output_processor.get_num_unfinished_requests() == 0
    cancelled = sum(n for (_m, o), n in served.runtime.scheduler.stats().outcomes.items()
                    if o == "cancelled")
    assert cancelled == cancelled_before + 1


def test_prompt_longer_than_the_context_is_400_with_the_limit(served: ServedRuntime) -> None:
    limit = served.runtime.manager.state.max_model_len
    assert limit is not None
    words = " ".join(f"w{i}" for i in range(limit * 2))
    with pytest.raises(openai.BadRequestError) as info:
        client(served).chat.completions.create(
            model=served.runtime.manager.active_model or A,
            messages=[{"role": "user", "content": words}], max_tokens=4)
    assert f"holds {limit}" in str(info.value)
    assert info.value.code == "context_length_exceeded"


def test_engine_death_mid_stream_ends_with_an_error_event(served: ServedRuntime) -> None:
    """Last: it kills the engine core."""
    engine = served.runtime.manager.active_engine
    assert engine is not None
    stream = client(served).chat.completions.create(
        model=served.runtime.manager.active_model or A, messages=HI, max_tokens=100_000,
        stream=True, extra_body=EOS)
    it = iter(stream)
    next(it)
    outcome: list[BaseException | None] = []

    def drain() -> None:
        try:
            for _ in it:
                pass
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    for pid in engine.pids():
        if pid != os.getpid():
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).send_signal(signal.SIGKILL)
    reader.join(60)
    assert not reader.is_alive(), "the stream hung after the engine died"
    assert isinstance(outcome[0], openai.APIError)
    assert "stopped" in str(outcome[0])

"""The local API without an engine load: error shapes, the model list, metrics, the API key.

The data dir is empty, so no model is on disk and every switch is refused before any load.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from core.scheduler import QueueFullError
from core.server.openai_app import ChatCompletionRequest, _generation_request, engine_error
from core.server.settings import ServerConfigError, ServerSettings, parse_serve, resolve_api_key
from tests.core.api_harness import ServedRuntime


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRuntime]:
    data = tmp_path_factory.mktemp("api-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VRAMPILOT_DATA_DIR", str(data))
        with ServedRuntime(data) as s:
            yield s


def client(served: ServedRuntime, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0, **kw)


def test_models_lists_the_catalog_with_fit_disk_and_active(served: ServedRuntime) -> None:
    models = {m.id: m for m in client(served).models.list()}
    assert "auto" in models
    assert "demo-tiny-a" in models
    info = models["demo-tiny-a"].model_extra["vrampilot"]  # type: ignore[index]
    assert info["on_disk"] is False
    assert info["active"] is False
    assert info["fits"] is False
    assert "disk" in info["refusal"]


def test_unknown_model_is_404_listing_the_ids(served: ServedRuntime) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(served).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    err = info.value.body
    assert isinstance(err, dict)
    assert err["code"] == "model_not_found"
    assert "no-such-model" in err["message"]
    assert "demo-tiny-a" in err["message"]
    assert "auto" in err["message"]


def test_bad_field_is_400_naming_it(served: ServedRuntime) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(served).chat.completions.create(
            model="demo-tiny-a", messages=[{"role": "user", "content": "hi"}], temperature=7)
    assert "temperature" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:
        client(served).chat.completions.create(model="demo-tiny-a", messages=[])
    assert "messages" in str(info.value)


def test_malformed_json_is_400(served: ServedRuntime) -> None:
    r = httpx.post(served.base_url + "/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"]


def test_nothing_fits_is_503_with_the_refusals(served: ServedRuntime) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client(served).chat.completions.create(
            model="demo-tiny-a", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert "Could not make demo-tiny-a active" in str(info.value)
    assert "disk" in str(info.value)
    with pytest.raises(openai.InternalServerError) as info:
        client(served).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert "router found no usable model" in str(info.value)


def test_health_and_metrics(served: ServedRuntime) -> None:
    root = served.base_url.removesuffix("/v1")
    health = httpx.get(root + "/health").json()
    assert health["status"] == "ok"
    assert health["active_model"] is None
    text = httpx.get(root + "/metrics").text
    for name in ("vrampilot_vram_total_bytes", "vrampilot_queue_length",
                 "vrampilot_requests_running", "vrampilot_request_rate_per_second",
                 "vrampilot_switch_duration_seconds", "vrampilot_generation_tokens_per_second"):
        assert name in text
    # the refused request of the previous test is counted (module-scoped server)
    assert 'vrampilot_requests_total{model="demo-tiny-a",outcome="no_model"}' in text


def test_queue_full_maps_to_503_with_retry_after() -> None:
    err = engine_error(QueueFullError(32, 32, 12.2), ())
    assert err.status == 503
    assert err.headers["Retry-After"] == "13"


def test_serve_option_parses_host_and_port() -> None:
    assert parse_serve("8080") == (None, 8080)
    assert parse_serve("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_serve("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match="HOST:"):
        parse_serve("localhost")


def test_non_loopback_without_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VRAMPILOT_TEST_KEY", raising=False)
    with pytest.raises(ServerConfigError, match="not a loopback address"):
        resolve_api_key(ServerSettings(host="0.0.0.0", api_key_env="VRAMPILOT_TEST_KEY"))
    with pytest.raises(ServerConfigError, match="api_key_env"):
        resolve_api_key(ServerSettings(host="192.168.1.5"))
    assert resolve_api_key(ServerSettings()) is None  # loopback: no key needed


def test_non_loopback_requires_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VRAMPILOT_TEST_KEY", "s3cret-key")
    settings = ServerSettings(enabled=True, host="0.0.0.0", port=0,
                              api_key_env="VRAMPILOT_TEST_KEY")
    with ServedRuntime(tmp_path, settings) as served:
        with pytest.raises(openai.AuthenticationError) as info:
            client(served).models.list()
        assert info.value.status_code == 401
        assert "s3cret" not in str(info.value.body)
        models = openai.OpenAI(base_url=served.base_url, api_key="s3cret-key",
                               max_retries=0).models.list()
        assert "auto" in [m.id for m in models]
        assert httpx.get(served.base_url.removesuffix("/v1") + "/health").status_code == 200


def test_private_request_never_reaches_the_remote_endpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener stands in for the remote endpoint and counts connections: none may come."""
    import socket
    import threading

    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    connections: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(conn)
            conn.close()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    config = tmp_path / "remote.yaml"
    config.write_text(f"remote:\n  base_url: http://127.0.0.1:{port}/v1\n  model: big\n"
                      "  connect_retries: 0\n", encoding="utf-8")
    try:
        with ServedRuntime(tmp_path, config_file=config) as served:
            c = client(served)
            with pytest.raises(openai.InternalServerError) as info:
                c.chat.completions.create(model="remote", messages=[
                    {"role": "user", "content": "secret"}], extra_body={
                    "vrampilot": {"private": True}})
            assert "private" in str(info.value)
            with pytest.raises(openai.InternalServerError) as info:
                c.chat.completions.create(model="auto", messages=[
                    {"role": "user", "content": "secret"}],
                    extra_headers={"X-Vrampilot-Private": "1"})
            assert "private" in str(info.value)
    finally:
        stop.set()
        acceptor.join(2)
        listener.close()
    assert connections == []


def test_listening_socket_is_tcp_so_streams_are_not_delayed_by_nagle() -> None:
    """asyncio sets TCP_NODELAY only when the socket says IPPROTO_TCP (bench_api: first token)."""
    import socket

    from core.server.serve import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_generation_batches_keep_order_and_raise_after_the_deltas_before_the_error() -> None:
    import asyncio
    from collections.abc import AsyncIterator, Callable

    from core.engine.base import EngineDiedError, GenerationDelta
    from core.server.openai_app import _Generation

    def start(_admitted: Callable[..., None]) -> AsyncIterator[GenerationDelta]:
        async def stream() -> AsyncIterator[GenerationDelta]:
            for i in range(3):
                yield GenerationDelta(text=f"t{i}", tokens=i + 1)
            raise EngineDiedError("the engine stopped")
        return stream()

    async def main() -> tuple[list[str], str]:
        run = _Generation(start)
        first = await run.next()
        assert first is not None
        texts = [first.text]
        await asyncio.sleep(0.01)  # the rest is queued: one batch, then the error
        batch = await run.next_batch()
        texts += [d.text for d in batch if d is not None]
        with pytest.raises(EngineDiedError) as info:
            await run.next_batch()
        return texts, str(info.value)

    texts, error = asyncio.run(main())
    assert texts == ["t0", "t1", "t2"]
    assert error == "the engine stopped"


@pytest.mark.parametrize(("kwargs", "expected"), [
    (None, None),  # not asked: the chat template's default, as vLLM's own server does
    ({}, None),
    ({"enable_thinking": True}, True),
    ({"enable_thinking": False}, False),
])
def test_thinking_is_the_templates_default_unless_asked(kwargs: dict[str, bool] | None,
                                                        expected: bool | None) -> None:
    body: dict[str, object] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    if kwargs is not None:
        body["chat_template_kwargs"] = kwargs
    assert _generation_request(ChatCompletionRequest.model_validate(body)).thinking is expected

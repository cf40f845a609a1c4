"""The control endpoint in-process: uvicorn on the 0600 Unix socket, on this test's own loop,
over a real Runtime on the simulated RTX 4090 Laptop (no model on disk, so no engine starts)."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from core.runtime import Runtime
from core.server.control_routes import Owner
from core.server.control_server import ControlServer
from core.server.instance_lock import InstanceLock


@pytest.fixture
def lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InstanceLock]:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    with tempfile.TemporaryDirectory(prefix="vp-") as run:
        monkeypatch.setenv("VRAMPILOT_RUNTIME_DIR", run)
        lock = InstanceLock()
        assert lock.try_acquire("test")
        yield lock
        lock.release()


async def serve(lock: InstanceLock, owner: Owner, tmp_path: Path
                ) -> tuple[Runtime, ControlServer, httpx.AsyncClient]:
    runtime = Runtime.create(simulate="rtx4090-laptop", history_path=tmp_path / "h.sqlite3")
    server = ControlServer(runtime, lock, owner)
    await server.start()
    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(lock.socket_path)),
                               base_url="http://vrampilot", timeout=30)
    return runtime, server, client


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, object]]]:
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


def test_routes_answer_on_the_private_socket(lock: InstanceLock, tmp_path: Path) -> None:
    raised: list[bool] = []

    async def body() -> None:
        handlers_before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        runtime, server, client = await serve(
            lock, Owner("app", simulate="rtx4090-laptop", raise_window=lambda: raised.append(True)),
            tmp_path)
        try:
            assert stat.S_IMODE(lock.socket_path.stat().st_mode) == 0o600
            owner = (await client.get("/owner")).json()
            assert owner["kind"] == "app"
            assert owner["active_model"] is None

            status = (await client.get("/status")).json()
            assert status["status"]["gpus"][0]["simulated"] is True
            assert status["text"].startswith("vrampilot status")
            assert "RTX 4090 Laptop" in status["text"]

            models = (await client.get("/models")).json()
            assert {m["id"] for m in models["models"]} >= {"demo-tiny-a", "demo-tiny-b"}
            history = (await client.get("/history", params={"limit": 5})).json()
            assert history["recent"] == []
            route = (await client.post("/route", json={"text": "Extract the name",
                                                       "task_type": "simple_extraction"})).json()
            assert "Complexity" in route["explanation"]

            unknown = await client.post("/switch", json={"model": "gpt-9"})
            assert unknown.status_code == 404
            assert "demo-tiny-a" in unknown.json()["detail"]  # the known ids are listed

            reply = await client.post("/generate", json={"prompt": "hi", "model": "gpt-9"})
            events = [json.loads(line) for line in reply.text.splitlines()]
            assert events[-1]["type"] == "error"
            assert events[-1]["exit_code"] == 2
            # The generate command's sampling options arrive checked.
            bad = await client.post("/generate", json={"prompt": "hi", "top_p": 1.5})
            assert bad.status_code == 422
            assert "top_p" in bad.text
            bad = await client.post("/generate", json={"prompt": "hi", "seed": -1})
            assert bad.status_code == 422

            assert (await client.post("/raise")).json()["raised"] is True
            assert raised == [True]
            assert (await client.get("/owner")).json()["raised"] == 1
            # uvicorn served without taking over the process's signal handlers.
            assert (signal.getsignal(signal.SIGINT),
                    signal.getsignal(signal.SIGTERM)) == handlers_before
        finally:
            await client.aclose()
            await server.close()
            await runtime.close()
        assert not lock.socket_path.exists()
        assert lock.held  # closing the server keeps the lock: the caller releases it

    asyncio.run(body())


def test_event_stream_carries_a_real_switchs_phases(lock: InstanceLock, tmp_path: Path) -> None:
    """A switch to a demo model that is not on disk fails at once; its phases reach /events."""

    async def body() -> None:
        runtime, server, client = await serve(lock, Owner("generate"), tmp_path)
        try:
            async with client.stream("GET", "/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                result = (await client.post("/switch", json={"model": "demo-tiny-a"})).json()
                assert not result["ok"]
                assert result["errors"]
                phases: list[str] = []
                async for kind, data in sse_events(stream):
                    assert kind == "switch"
                    phases.append(str(data["phase"]))
                    if data["phase"] in ("failed", "ready", "cancelled"):
                        break
            assert phases[0] == "planning"
            assert phases[-1] == "failed"

            # A headless owner has no window to raise.
            refused = await client.post("/raise")
            assert refused.status_code == 409
            assert "headless" in refused.json()["detail"]

            # Closing ends open event streams instead of waiting for them.
            async with client.stream("GET", "/events") as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith(":")
                await asyncio.wait_for(server.close(), 5)
                rest = [line async for line in lines]
                assert all(not line.startswith("event:") for line in rest)
        finally:
            await client.aclose()
            await server.close()
            await runtime.close()

    asyncio.run(body())


def test_bad_requests_get_one_sentence_and_the_owner_keeps_serving(lock: InstanceLock,
                                                                  tmp_path: Path) -> None:
    """The socket is an entry point too: a malformed request is refused with one sentence naming
    the field (what a command prints), and the owner answers the next request as before."""

    async def body() -> None:
        runtime, server, client = await serve(lock, Owner("generate"), tmp_path)
        try:
            cases = [
                (client.post("/generate", json={"prompt": "hi", "max_tokens": 0}),
                 "invalid max_tokens: Input should be greater than 0"),
                (client.post("/generate", json={"prompt": "hi", "temperature": -1}),
                 "invalid temperature: Input should be greater than or equal to 0"),
                (client.post("/generate", json={"prompt": ""}), "invalid prompt:"),
                (client.post("/switch", json={}), "invalid model: Field required"),
                (client.post("/route", content=b"{not json",
                             headers={"content-type": "application/json"}),
                 "the request body is not valid JSON"),
                (client.get("/history", params={"limit": -1}),
                 "invalid limit: Input should be greater than or equal to 0"),
            ]
            for request, sentence in cases:
                response = await request
                assert response.status_code == 422
                detail = response.json()["detail"]
                assert isinstance(detail, str)
                assert detail.startswith(sentence), detail
                assert "\n" not in detail
            assert (await client.get("/owner")).json()["active_model"] is None
            assert runtime.manager.active_model is None  # nothing was loaded or switched
        finally:
            await client.aclose()
            await server.close()
            await runtime.close()

    asyncio.run(body())

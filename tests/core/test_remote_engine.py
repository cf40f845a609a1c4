"""RemoteEngine against a real `vllm` OpenAI-compatible server on loopback (and a tiny 401 server).

The vLLM server (demo model, CPU build) takes ~30 s to start; one is shared by the module and the
last test kills it mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from core.engine.base import (
    ChatMessage,
    Engine,
    GenerationDelta,
    GenerationRequest,
    LoadSpec,
    RemoteAuthError,
    RemoteStreamError,
    RemoteUnreachableError,
)
from core.engine.remote_engine import RemoteConfig, RemoteEngine, resolve_api_key

T = TypeVar("T")
SERVED = "demo-remote"
Server = tuple[str, subprocess.Popen[bytes]]


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(text: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", text),), **kw)


SPEC = LoadSpec(model_id=SERVED, path="", max_model_len=512)


@pytest.fixture(scope="module")
def vllm_server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real vLLM server: only tests marked `vllm` may use it (tests/conftest.py enforces it)."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
             str(demo_model_dir), "--host", "127.0.0.1", "--port", str(port), "--max-model-len",
             "4096", "--enforce-eager", "--gpu-memory-utilization", "0.1", "--dtype", "float32",
             "--served-model-name", SERVED],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 150
    url = f"http://127.0.0.1:{port}/v1"
    engine = RemoteEngine(RemoteConfig(base_url=url, model=SERVED, connect_retries=0,
                                       connect_timeout_s=1))
    try:
        while True:  # bounded poll of the health of a process we do not control
            if proc.poll() is not None:
                pytest.fail(f"vllm server exited: {log.read_text()[-3000:]}")
            try:
                run(engine.load(SPEC), timeout=5)
                break
            except (RemoteUnreachableError, RemoteStreamError):
                if time.monotonic() > deadline:
                    pytest.fail("vllm server not ready in 150 s")
                time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the engine core shares the session


@pytest.mark.vllm
def test_stream_a_reply(vllm_server: Server) -> None:
    url, _ = vllm_server
    engine = RemoteEngine(RemoteConfig(base_url=url, model=SERVED))
    assert isinstance(engine, Engine)

    async def scenario() -> list[GenerationDelta]:
        await engine.load(SPEC)
        return [d async for d in engine.generate(ask("Hello", max_tokens=16, ignore_eos=True,
                                                     seed=3))]

    deltas = run(scenario())
    assert engine.is_healthy()
    assert engine.pids() == ()
    last = deltas[-1]
    assert last.finished
    assert last.finish_reason == "length"
    assert last.tokens == 16
    assert last.first_token_s is not None
    assert 0 < last.first_token_s <= last.elapsed_s
    assert "".join(d.text + d.thinking for d in deltas)


@pytest.mark.vllm
def test_abort_closes_the_stream(vllm_server: Server) -> None:
    url, _ = vllm_server
    engine = RemoteEngine(RemoteConfig(base_url=url, model=SERVED))

    async def scenario() -> list[GenerationDelta]:
        got = []
        async for d in engine.generate(ask("go", max_tokens=400, ignore_eos=True,
                                           request_id="r")):
            got.append(d)
            if len(got) == 2:
                await engine.abort("r")
        return got

    deltas = run(scenario())
    assert deltas[-1].finish_reason == "abort"
    assert deltas[-1].tokens < 400


def test_unreachable_port_fails_fast() -> None:
    engine = RemoteEngine(RemoteConfig(base_url=f"http://127.0.0.1:{free_port()}/v1",
                                       model="x", connect_retries=1, connect_timeout_s=2))
    started = time.monotonic()
    with pytest.raises(RemoteUnreachableError, match="cannot be reached"):
        run(engine.load(SPEC))
    assert time.monotonic() - started < 3
    with pytest.raises(RemoteUnreachableError):
        run(anext(engine.generate(ask("hi"))))  # type: ignore[arg-type]


class _Refuse(http.server.BaseHTTPRequestHandler):
    seen_auth: list[str | None] = []  # noqa: RUF012 - test recorder

    def _refuse(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        body = b'{"error": "invalid api key"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _refuse
    do_POST = _refuse

    def log_message(self, *args: Any) -> None:
        pass


def test_wrong_key_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _Refuse.seen_auth.clear()  # the recorder is class-wide: an earlier run in this process
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("VRAMPILOT_TEST_KEY", "sk-wrong")
    try:
        engine = RemoteEngine(RemoteConfig(
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="m",
            api_key_env="VRAMPILOT_TEST_KEY"))
        with pytest.raises(RemoteAuthError, match="HTTP 401") as info:
            run(engine.load(SPEC))
        assert "sk-wrong" not in str(info.value)
        with pytest.raises(RemoteAuthError):
            run(anext(engine.generate(ask("hi"))))  # type: ignore[arg-type]
    finally:
        server.shutdown()
        server.server_close()
    assert _Refuse.seen_auth == ["Bearer sk-wrong", "Bearer sk-wrong"]


def test_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RemoteConfig(base_url="http://h/v1", model="m", api_key_env="VRAMPILOT_TEST_KEY")
    monkeypatch.delenv("VRAMPILOT_TEST_KEY", raising=False)
    assert resolve_api_key(cfg) is None
    monkeypatch.setenv("VRAMPILOT_TEST_KEY", "sk-secret-123")
    assert resolve_api_key(cfg) == "sk-secret-123"
    assert "sk-secret-123" not in repr(cfg)
    assert "sk-secret-123" not in repr(RemoteEngine(cfg).__dict__)


def test_bad_base_url() -> None:
    with pytest.raises(ValueError, match="base_url"):
        RemoteEngine(RemoteConfig(base_url="ftp://x", model="m"))


@pytest.mark.vllm
def test_server_killed_mid_stream(vllm_server: Server) -> None:
    """Runs last: it kills the module's server.

    The reply asked for is long (4000 tokens, ~10 s here) and the server is killed at its first
    delta: on a busy 2-core machine a 500-token reply was once sent whole, into the socket buffer,
    before the kill, and then ended normally.
    """
    url, proc = vllm_server
    engine = RemoteEngine(RemoteConfig(base_url=url, model=SERVED, read_timeout_s=10))

    async def scenario() -> int:
        n = 0
        async for _ in engine.generate(ask("go", max_tokens=4000, ignore_eos=True)):
            n += 1
            if n == 1:
                os.killpg(proc.pid, signal.SIGKILL)
        return n

    started = time.monotonic()
    with pytest.raises(RemoteStreamError, match="closed"):
        run(scenario(), timeout=30)
    assert time.monotonic() - started < 12
    proc.wait(timeout=10)

"""Local API benchmark: vrampilot's OpenAI-compatible API against vLLM's own OpenAI server on the
same demo model, in the same run, with the same client (the official `openai` async client).
Ours is the real app (offscreen) started with `--serve`, so its Qt/asyncio loop serves the API.
Both servers run side by side and the rounds alternate, so the shared machine's load swings
weigh on both alike: compare the two columns (ratios), not one run with another.

Figures: time to first token and tokens/s for 1 and 4 concurrent streams (64 tokens each,
`ignore_eos`), then the number of switches for 8 interleaved two-model requests through our API,
against the arrival order (one switch per change of model, what main did).

``run() -> dict`` returns {name: {"min", "median", "max", "unit"}}; ``python -m
tests.benchmarks.bench_api`` prints it as JSON. About 4 minutes on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from core.engine.demo_model import ensure_demo_models

ROUNDS_1 = 5
ROUNDS_4 = 3
MAX_TOKENS = 64
A, B = "demo-tiny-a", "demo-tiny-b"
PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a short story about a GPU."}]
START_TIMEOUT_S = 600.0  # either server: import vLLM, start the engine (busy machine)


def _stats(values: list[float], unit: str) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "unit": unit, "n": len(values)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _one_stream(client: openai.AsyncOpenAI, model: str) -> tuple[float, float, int]:
    """(time to first token, time of the last token, tokens) from the request's start."""
    start = time.perf_counter()
    first: float | None = None
    last = start
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    async for chunk in stream:
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = now
            last = now
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    if first is None or tokens != MAX_TOKENS:
        raise RuntimeError(f"{model}: {tokens} tokens streamed, first at {first}")
    return first - start, last - start, tokens


async def _compare(servers: dict[str, str], results: dict[str, list[float]]) -> None:
    """Rounds alternate between the servers, so the machine's load swings hit both alike."""
    clients = {prefix: openai.AsyncOpenAI(base_url=base, api_key="bench", max_retries=0,
                                          timeout=300) for prefix, base in servers.items()}
    for client in clients.values():
        await _one_stream(client, A)  # warm the path
    for _ in range(ROUNDS_1):
        for prefix, client in clients.items():
            ttft, end, tokens = await _one_stream(client, A)
            results.setdefault(f"{prefix}first_token_1_stream", []).append(ttft * 1000)
            results.setdefault(f"{prefix}tokens_per_s_1_stream", []).append(
                (tokens - 1) / (end - ttft))
    for _ in range(ROUNDS_4):
        for prefix, client in clients.items():
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(_one_stream(client, A) for _ in range(4)))
            wall = time.perf_counter() - t0
            results.setdefault(f"{prefix}first_token_4_streams", []).append(
                statistics.mean(o[0] for o in outs) * 1000)
            results.setdefault(f"{prefix}tokens_per_s_4_streams", []).append(
                sum(o[2] for o in outs) / wall)
    for client in clients.values():
        await client.close()


def _wait_for(proc: subprocess.Popen[bytes], log: Any, ready: Any, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{what} exited: " + log.read()[-2000:].decode())
        if time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(f"{what} did not start: " + log.read()[-2000:].decode())
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _interleaved(base: str) -> float:
    """8 requests for two models arriving A, B, A, B, ... at once; the wall time."""
    client = openai.AsyncOpenAI(base_url=base, api_key="bench", max_retries=0, timeout=900)

    async def ask(i: int) -> None:
        await asyncio.sleep(0.05 * i)
        await client.chat.completions.create(model=(A, B)[i % 2], messages=PROMPT,
                                             max_tokens=8)

    t0 = time.perf_counter()
    await asyncio.gather(*(ask(i) for i in range(8)))
    await client.close()
    return time.perf_counter() - t0


@contextlib.contextmanager
def _vllm_server(model_dir: Path) -> Iterator[str]:
    """vLLM's own OpenAI server on the demo model (the recipe of /work/shared/FACTS.md)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "512",
           "--enforce-eager", "--gpu-memory-utilization", "0.1", "--served-model-name", A]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(proc, log, lambda: httpx.get(f"http://127.0.0.1:{port}/health",
                                                    timeout=2).status_code == 200,
                      "vLLM's server")
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            _stop(proc)


@contextlib.contextmanager
def _our_app(data: Path) -> Iterator[str]:
    """The real app (offscreen) with `--serve`: its qasync loop serves the API, as users get it;
    it loads demo-tiny-a at start."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1"
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(data), QT_QPA_PLATFORM="offscreen",
               XDG_CONFIG_HOME=str(data / "config"))

    def loaded() -> bool:
        models = httpx.get(base + "/models", timeout=2).json()["data"]
        return any(m.get("vrampilot", {}).get("active") for m in models)

    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", "--serve",
                                 f"127.0.0.1:{port}"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait_for(proc, log, loaded, "the app")
            # The model loaded at start is demo-tiny-a unless memory was short: ask for it.
            openai.OpenAI(base_url=base, api_key="bench", max_retries=0, timeout=900
                          ).chat.completions.create(model=A, messages=PROMPT, max_tokens=2)
            yield base
        finally:
            _stop(proc)


def run() -> dict[str, dict[str, Any]]:
    from core.history_store import HistoryStore

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        data = Path(tmp)
        model_dir = ensure_demo_models(data / "models")[0]
        with _vllm_server(model_dir) as vllm_base, _our_app(data) as our_base:
            asyncio.run(_compare({"baseline_vllm_server_": vllm_base, "api_": our_base},
                                 results))
        with _our_app(data) as our_base:  # alone: the switches need the memory
            history = HistoryStore(data / "history.sqlite3")
            before = len(history.recent(limit=1000))
            results["api_8_interleaved_wall"] = [asyncio.run(_interleaved(our_base))]
            results["api_switches_8_interleaved"] = [
                float(len(history.recent(limit=1000)) - before)]
            history.close()
    # What main did: one switch per change of model, in arrival order (A active first).
    arrival = [A] + [(A, B)[i % 2] for i in range(8)]
    results["baseline_switches_in_arrival_order"] = [
        float(sum(1 for x, y in itertools.pairwise(arrival) if x != y))]
    units = {"first_token": "ms", "tokens_per_s": "tok/s", "switches": "switches",
             "wall": "s"}
    out: dict[str, dict[str, Any]] = {}
    for name, values in results.items():
        unit = next((u for key, u in units.items() if key in name), "")
        out[name] = _stats(values, unit)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
